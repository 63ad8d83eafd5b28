#!/usr/bin/env bash
# Runs one deep-context benchmark on a shared machine without holding the benchmark lock
# through its long untimed cache fill: the command starts at nice 19 (using only idle CPU);
# when MARKER appears on its stderr (the fill is done and the timed part begins), the
# command is paused, the lock is taken, the command is raised to nice -10 and resumed,
# and the lock is held until it exits. Its stdout and stderr are kept.
#
#   bench/deep_run.sh MARKER OUT_PREFIX CMD [ARGS...]
#
# e.g. (ferromoe prints "cache filled: ..." after the fill of -d):
#   bench/deep_run.sh 'cache filled' /tmp/ours-32k target/release/ferromoe bench -m F -t 2 -p 0 -n 32 -d 32768 -r 1
# Peers print no such line: build them with one (see bench/RESULTS.md, "32768 cached tokens").
# Env: BENCH_LOCK (default /tmp/bench.lock), FILL_NICE (the fill's nice level, default 19: raise it
# when the fill must finish in a given time on a busy machine). Needs root for the negative nice.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n 2,14p "$0" >&2; exit 2; }
marker=$1
out=$2
shift 2
lock=${BENCH_LOCK:-/tmp/bench.lock}
: >"$out.err"
nice -n "${FILL_NICE:-19}" "$@" >"$out.out" 2>"$out.err" &
pid=$!
# Wait for the marker (or for the command to end without one).
while ! grep -q -- "$marker" "$out.err"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" || true
        echo "deep_run: the command ended before '$marker' (see $out.err)" >&2
        exit 1
    fi
    sleep 0.05
done
kill -STOP "$pid"
exec 9>"$lock"
flock 9
echo "deep_run: $(date -u +%H:%M:%S) lock taken, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# All threads of the process, then resume.
renice -n -10 -p $(ls /proc/"$pid"/task) >/dev/null
kill -CONT "$pid"
status=0
wait "$pid" || status=$?
echo "deep_run: $(date -u +%H:%M:%S) done (exit $status)" >&2
exit $status
