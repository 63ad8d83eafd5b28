#!/usr/bin/env bash
# ferromoe vs llama.cpp on the same GGUF file, same threads, in one run:
# llama-bench and `ferromoe bench` alternate for --rounds rounds of -r repetitions each,
# then both are printed with the ratios (ferromoe / llama.cpp), the decode rate as a
# fraction of the memory-bandwidth bound and the prefill rate as a fraction of the int8
# MAC rate, and (with --results) the "End-to-end" section of bench/RESULTS.md is rewritten.
#
#   bench/compare.sh --model /work/bench-scratch/v2-lite-q4km.gguf -t 2 --rounds 2 -r 2 --results
#
# Options: --model F (required) · -t threads (2) · -p prompt (512) · -n gen (128) · -r reps per
# round (2) · --rounds N (2) · -d depth (0: both engines run each test after this many cached
# tokens, llama-bench's -d) · --experts-per-token K (also measure ferromoe with top-K experts;
# llama.cpp runs with its default k) · --results (update bench/RESULTS.md) · --label TEXT.
# Env: LLAMA_BENCH (path; default: bench/build-llama-cpp.sh builds/caches it),
#      FERROMOE (binary; default: cargo build --release into $CARGO_TARGET_DIR or target/),
#      BW_GBS (measured read bandwidth, GB/s; default 19 for 1 thread, 27 for 2),
#      MAC_GS (int8 multiply-accumulates per second, G; default 95 per thread).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="" THREADS=2 P=512 N=128 D=0 REPS=2 ROUNDS=2 KSEL="" RESULTS=0 LABEL=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model|-m) MODEL="$2"; shift 2 ;;
        -t) THREADS="$2"; shift 2 ;;
        -p) P="$2"; shift 2 ;;
        -n) N="$2"; shift 2 ;;
        -d) D="$2"; shift 2 ;;
        -r) REPS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --experts-per-token) KSEL="$2"; shift 2 ;;
        --results) RESULTS=1; shift ;;
        --label) LABEL="$2"; shift 2 ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -n "$MODEL" && -f "$MODEL" ]] || { echo "compare.sh: --model FILE is required (make one with ferromoe synth)" >&2; exit 2; }

LLAMA_BENCH="${LLAMA_BENCH:-$(bench/build-llama-cpp.sh)}"
if [[ -z "${FERROMOE:-}" ]]; then
    TD="${CARGO_TARGET_DIR:-target}"
    cargo build --release -q -p ferromoe >&2
    FERROMOE="$TD/release/ferromoe"
fi

OUT="$(mktemp -d /tmp/ferromoe-compare.XXXXXX)"
echo "compare: $MODEL · $THREADS threads · pp$P tg$N depth $D · $ROUNDS rounds × $REPS reps · raw JSON in $OUT" >&2
"$FERROMOE" inspect --json --tensors "$MODEL" > "$OUT/inspect.json"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    echo "compare: round $round: llama-bench" >&2
    "$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p "$P" -n "$N" -d "$D" -r "$REPS" -o json > "$OUT/llama.$round.json" 2> "$OUT/llama.$round.log" \
        || { echo "compare: llama-bench failed, see $OUT/llama.$round.log" >&2; tail -5 "$OUT/llama.$round.log" >&2; exit 1; }
    echo "compare: round $round: ferromoe bench" >&2
    "$FERROMOE" bench -m "$MODEL" -t "$THREADS" -p "$P" -n "$N" -d "$D" -r "$REPS" --json > "$OUT/ferromoe.$round.json"
    if [[ -n "$KSEL" ]]; then
        echo "compare: round $round: ferromoe bench --experts-per-token $KSEL" >&2
        "$FERROMOE" bench -m "$MODEL" -t "$THREADS" -p "$P" -n "$N" -d "$D" -r "$REPS" --experts-per-token "$KSEL" --json > "$OUT/ferromoe-k.$round.json"
    fi
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo '+dirty')"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) · $(nproc) cores · $(free -g | awk '/Mem:/{print $2}') GiB · load average $LOAD_BEFORE before, $LOAD_AFTER after"
CMD="bench/compare.sh --model $(basename "$MODEL") -t $THREADS -p $P -n $N -d $D -r $REPS --rounds $ROUNDS${KSEL:+ --experts-per-token $KSEL}"
python3 bench/compare_report.py "$OUT" --threads "$THREADS" --commit "$COMMIT" --cpu "$CPU" --cmd "$CMD" \
    --label "$LABEL" ${RESULTS:+$( ((RESULTS)) && echo --results bench/RESULTS.md)}
