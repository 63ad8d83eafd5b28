#!/usr/bin/env bash
# One-token GEMV on the same shapes, ferromoe's kernel bench vs ik_llama.cpp's ggml (issue 14):
# builds bench/ik_gemv/ik_gemv.c against ik's static ggml, checks its output against dequantize +
# dot, then for each group of types runs ours (`matmul --only gemv --types ...`) and ik's harness
# back to back in one locked sitting, --rounds times, and joins the 2-thread cold rates (each
# engine next to the read bandwidth it measured itself) into one Markdown table.
#
#   bench/ik_gemv.sh [--rounds 1] [--groups iq1,iq2,iq3,k,legacy,ctl] [--out DIR] [--reps 11] [--shapes 2048x1408,...]
#
# Env: IK (ik_llama.cpp checkout, default /work/ik_llama.cpp; needs build/ggml/src/libggml.a from
# `cmake -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF`), MATMUL (our kernel bench binary; default the
# newest build of benches/matmul.rs in target/release/deps; build it with `cargo bench -p kernels --bench matmul --no-run`).
# Timings are serialised with other benchmarks through /tmp/bench.lock and run at raised priority.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=1 GROUPS_WANTED="iq1,iq2,iq3,k,legacy" OUT="" REPS=11 SHAPES="2048x1408,7168x2048,2048x102400"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --groups) GROUPS_WANTED="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --reps) REPS="$2"; shift 2 ;;
        --shapes) SHAPES="$2"; shift 2 ;;
        *) echo "ik_gemv.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
IK="${IK:-/work/ik_llama.cpp}"
# The newest build of benches/matmul.rs (other matmul-* binaries are test harnesses).
MATMUL="${MATMUL:-$(grep -l 'benches/matmul\.rs' $(ls -t target/release/deps/matmul-*.d 2>/dev/null) /dev/null 2>/dev/null | head -1 | sed 's/\.d$//' || true)}"
[[ -x "$MATMUL" ]] || { echo "ik_gemv.sh: no kernel bench binary (set MATMUL)" >&2; exit 2; }
[[ -f "$IK/build/ggml/src/libggml.a" ]] || { echo "ik_gemv.sh: $IK/build/ggml/src/libggml.a missing" >&2; exit 2; }
OUT="${OUT:-target/ik_gemv/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

# ik's static ggml is built with OpenMP (its thread team) and C++ (iqk).
HARNESS=target/ik_gemv/ik_gemv
mkdir -p target/ik_gemv
nice -n 19 gcc -O2 -march=native -std=gnu11 -Wall -Wextra -fopenmp -I"$IK/ggml/include" \
    bench/ik_gemv/ik_gemv.c "$IK/build/ggml/src/libggml.a" -lstdc++ -lm -lpthread -o "$HARNESS"

# Each group: our type names | ik's (its plain layout and, where it has one, its row-interleaved
# "_rN" layout: the -rtr repack of the plain type, or for iq1_s/iq1_m a type quantized directly).
# ik has no TQ1_0/TQ2_0; its ternary types iq1_bn (1.625 bpw) and iq2_bn (2 bpw) stand in.
declare -A GROUP=(
    [iq1]="IQ1_S,IQ1_M,TQ1_0,TQ2_0|iq1_s,iq1_s_r4,iq1_m,iq1_m_r4,iq1_bn,iq2_bn,iq2_bn_r4"
    [iq2]="IQ2_XXS,IQ2_XS,IQ2_S|iq2_xxs,iq2_xxs_r4,iq2_xs,iq2_xs_r4,iq2_s,iq2_s_r4"
    [iq3]="IQ3_XXS,IQ3_S|iq3_xxs,iq3_xxs_r4,iq3_s,iq3_s_r4"
    [k]="Q2_K,Q3_K,IQ4_XS|q2_K,q2_k_r4,q3_K,q3_k_r4,iq4_xs,iq4_xs_r8"
    [legacy]="Q4_0,MXFP4|q4_0,q4_0_r8,mxfp4,mxfp4_r8"
    [ctl]="Q4_K,Q8_0|q4_K,q4_k_r4,q8_0,q8_0_r8"
)
IFS=, read -ra WANT <<<"$GROUPS_WANTED"
for g in "${WANT[@]}"; do
    [[ -n "${GROUP[$g]:-}" ]] || { echo "ik_gemv.sh: unknown group $g (iq1, iq2, iq3, k, legacy, ctl)" >&2; exit 2; }
done

echo "== harness check (graph output vs dequantize + dot)" | tee "$OUT/check.md"
all_ik=$(for g in "${WANT[@]}"; do echo -n "${GROUP[$g]#*|},"; done)
nice -n 19 "$HARNESS" --check --types "${all_ik%,}" | tee -a "$OUT/check.md" ||
    echo "(some checks failed: see above)" | tee -a "$OUT/check.md"

for ((r = 1; r <= ROUNDS; r++)); do
    for g in "${WANT[@]}"; do
        ours="${GROUP[$g]%|*}" ik="${GROUP[$g]#*|}"
        echo "== round $r group $g: ours then ik, one locked sitting ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
        flock /tmp/bench.lock nice -n -10 bash -c '
            "$1" --only gemv --types "$2" --shapes "$5" > "$6/ours-$7-r$8.md"
            "$3" --types "$4" --shapes "$5" --reps "$9" > "$6/ik-$7-r$8.md"
        ' _ "$MATMUL" "$ours" "$HARNESS" "$ik" "$SHAPES" "$OUT" "$g" "$r" "$REPS"
        echo "   done $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
python3 bench/ik_gemv/report.py "$OUT" | tee "$OUT/table.md"
