#!/usr/bin/env bash
# ferromoe vs llama.cpp vs ik_llama.cpp on one file, alternating in one sitting: pp and tg with
# each engine's llama-bench-style tool, --rounds rounds, then a table of means and ratios.
#
#   bench/three_way.sh --model F [-t 2] [-p 512] [-n 32] [-r 2] [--rounds 2] [--ik-flags "-fmoe 1 -fa 1 -rtr 1"]
#
# Env: LLAMA_BENCH (default: bench/build-llama-cpp.sh), IK_BENCH (ik_llama.cpp's llama-bench;
# default /work/ik_llama.cpp/build/bin/llama-bench; build it outside the repo with
# `cmake -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF` and target llama-bench), FERROMOE (binary;
# default target/release/ferromoe). Runs are serialised with other benchmarks through
# /tmp/bench.lock and run at raised priority when allowed (root), so niced builds do not disturb them.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="" T=2 P=512 N=32 R=2 ROUNDS=2 IKF="-fmoe 1 -fa 1 -rtr 1"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model|-m) MODEL="$2"; shift 2 ;;
        -t) T="$2"; shift 2 ;;
        -p) P="$2"; shift 2 ;;
        -n) N="$2"; shift 2 ;;
        -r) R="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --ik-flags) IKF="$2"; shift 2 ;;
        *) echo "three_way.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -f "$MODEL" ]] || { echo "three_way.sh: --model FILE is required" >&2; exit 2; }
LLAMA_BENCH="${LLAMA_BENCH:-$(bench/build-llama-cpp.sh)}"
IK_BENCH="${IK_BENCH:-/work/ik_llama.cpp/build/bin/llama-bench}"
FERROMOE="${FERROMOE:-target/release/ferromoe}"
for b in "$LLAMA_BENCH" "$IK_BENCH" "$FERROMOE"; do
    [[ -x "$b" ]] || { echo "three_way.sh: $b is not an executable" >&2; exit 2; }
done
PRIO=(nice -n 0); [[ $(id -u) == 0 ]] && PRIO=(nice -n -10)
OUT=$(mktemp -d /tmp/three-way.XXXXXX)
run() { # name, command...
    local name="$1"; shift
    echo "three_way: $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) $name" >&2
    flock /tmp/bench.lock "${PRIO[@]}" "$@" 2>>"$OUT/$name.log" | grep -E "^\| .*(pp|tg)[0-9]+ " >> "$OUT/$name.md" || true
}
for round in $(seq 1 "$ROUNDS"); do
    run llama "$LLAMA_BENCH" -m "$MODEL" -t "$T" -p "$P" -n "$N" -r "$R"
    # shellcheck disable=SC2086
    run ik "$IK_BENCH" -m "$MODEL" -t "$T" -p "$P" -n "$N" -r "$R" $IKF
    run ferromoe "$FERROMOE" bench -m "$MODEL" -t "$T" -p "$P" -n "$N" -r "$R"
done
python3 - "$OUT" "$P" "$N" <<'PY'
import re, sys, statistics as st
out, p, n = sys.argv[1], sys.argv[2], sys.argv[3]
def rates(name):
    got = {}
    for line in open(f"{out}/{name}.md"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        test = next((c for c in cells if re.fullmatch(r"(pp|tg)\d+", c)), None)
        m = re.match(r"([\d.]+)", cells[-1])
        if test and m:
            got.setdefault(test, []).append(float(m.group(1)))
    return got
l, i, f = rates("llama"), rates("ik"), rates("ferromoe")
print("| test | llama.cpp t/s | ik_llama.cpp t/s | ferromoe t/s | vs llama.cpp | vs ik_llama.cpp |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for test in (f"pp{p}", f"tg{n}"):
    a, b, c = (st.mean(x.get(test, [float("nan")])) for x in (l, i, f))
    print(f"| {test} | {a:.2f} | {b:.2f} | {c:.2f} | {c/a:.2f}× | {c/b:.2f}× |")
PY
echo "three_way: raw output in $OUT" >&2
