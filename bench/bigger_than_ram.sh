#!/bin/sh
# A model bigger than this machine's RAM, run from a cold page cache: the memory plan must
# repack what fits, keep the rest mapped, warn what to expect, and the process must not be
# OOM-killed. Reports the storage's direct read rate, the load summary, prefill/decode
# rates, max RSS, major faults and the peak RSS / cgroup usage sampled every second.
#   sh bench/bigger_than_ram.sh [FILE]   (not in CI; makes FILE if missing, never deletes it)
# Default FILE: a V3-shape Q8_0 synth of 4 layers (1 dense + 3 MoE layers of 256 experts),
# 39.3 GB; Q8_0 because it is written ~4x faster than Q4_K_M (LAYERS=, TYPE= to change).
set -eu
bin=${FERROMOE:-target/release/ferromoe}
file=${1:-/work/bigfile/v3-l4-q8_0.gguf}
layers=${LAYERS:-4}
type=${TYPE:-Q8_0}
tokens=${TOKENS:-8}
if [ ! -f "$file" ]; then
    mkdir -p "$(dirname "$file")"
    nice -n 10 "$bin" synth --shape v3 --layers "$layers" --dense-layers 1 --type "$type" -o "$file"
fi
ram=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024))
size=$(stat -c %s "$file")
echo "file: $file, $size bytes ($(awk "BEGIN {printf \"%.1f\", $size / 2^30}") GiB); RAM (MemTotal): $(awk "BEGIN {printf \"%.1f\", $ram / 2^30}") GiB"
if [ "$size" -le "$ram" ]; then
    echo "the file is not bigger than RAM: nothing to show" >&2
    exit 1
fi
cg=/sys/fs/cgroup/memory/memory.usage_in_bytes
[ -r "$cg" ] || cg=/sys/fs/cgroup/memory.current

# The storage's read rate, past the page cache (O_DIRECT), 4 GiB from the middle of the file.
echo "== direct read (dd iflag=direct, 4 GiB)"
dd if="$file" of=/dev/null bs=16M count=256 skip=$((size / 2 / 16777216)) iflag=direct 2>&1 | tail -1

# Cold start: the file's pages evicted (posix_fadvise DONTNEED; no root needed).
python3 -c "import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)" "$file"
out=${TMPDIR:-/tmp}/ferromoe-bigger-than-ram.$$
echo "== run: cold page cache, a short prompt, $tokens decode tokens"
/usr/bin/time -v "$bin" run -m "$file" --temp 0 --ignore-eos --stats -n "$tokens" \
    -p "The quick brown fox jumps over the lazy dog while the" >"$out.stdout" 2>"$out.stderr" &
tpid=$!
sleep 0.2
pid=$(pgrep -P "$tpid" || true)
peak_rss=0 peak_anon=0 peak_cg=0 read=0 load_read=
while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
    set -- $(awk '/^(VmRSS|RssAnon):/ {print $2}' "/proc/$pid/status" 2>/dev/null) 0 0
    [ "$1" -gt "$peak_rss" ] && peak_rss=$1
    [ "$2" -gt "$peak_anon" ] && peak_anon=$2
    c=$(($(cat "$cg" 2>/dev/null || echo 0) / 1024))
    [ "$c" -gt "$peak_cg" ] && peak_cg=$c
    # Bytes this process made the kernel read from the storage (page-ins included).
    r=$(awk '/^read_bytes:/ {print $2}' "/proc/$pid/io" 2>/dev/null || true)
    [ -n "$r" ] && read=$r
    [ -z "$load_read" ] && grep -q "^load:" "$out.stderr" && load_read=$read
    sleep 1
done
status=0
wait "$tpid" || status=$?
grep -E "^(deepseek2|load|  |warning|prompt )" "$out.stderr" || true
grep -E "Elapsed|Maximum resident|Major .*page faults|Minor .*page faults|Exit status" "$out.stderr"
echo "sampled peaks: VmRSS $((peak_rss / 1024)) MiB, RssAnon $((peak_anon / 1024)) MiB, cgroup usage (incl. page cache) $((peak_cg / 1024)) MiB; read from storage: $((read / 1048576)) MiB (last sample), $((${load_read:-0} / 1048576)) MiB of it by the end of the load"
echo "exit status $status$([ "$status" -ge 128 ] && echo " (killed by signal $((status - 128)))")"
rm -f "$out.stdout" "$out.stderr"
exit "$status"
