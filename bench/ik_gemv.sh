#!/usr/bin/env bash
# One-token GEMV on the same shapes, ferromoe's kernel bench vs ik_llama.cpp's ggml (issue 14):
# builds bench/ik_gemv/ik_gemv.c against ik's static ggml, checks its output against dequantize +
# dot, then per type takes one locked sitting in which, shape by shape, ours (`matmul --only gemv`)
# and ik's harness run back to back (ik first in even rounds, or in odd ones with --ik-first),
# --rounds times; then joins the 2-thread cold rates (each engine next to the read bandwidth it
# measured itself in the same process) into one Markdown table (bench/ik_gemv/report.py, best
# of the rounds).
#
#   bench/ik_gemv.sh [--rounds 1] [--ik-first] [--types IQ2_XXS,Q4_0,...] [--out DIR] [--reps 11] [--shapes 2048x1408,...]
#
# Env: IK (ik_llama.cpp checkout, default /work/ik_llama.cpp; needs build/ggml/src/libggml.a from
# `cmake -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF`), MATMUL (our kernel bench binary; default the
# newest build of benches/matmul.rs in target/release/deps; build it with
# `cargo bench -p kernels --bench matmul --no-run`). Timings are serialised with other benchmarks
# through /tmp/bench.lock and run at raised priority.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=1 IK_FIRST=0 TYPES="" OUT="" REPS=11 SHAPES="2048x1408,7168x2048,2048x102400"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --types) TYPES="$2"; shift 2 ;;
        --ik-first) IK_FIRST=1; shift ;;
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

# Our type -> ik's types: its plain layout and, where it has one, its row-interleaved "_rN"
# layout (the -rtr repack of the plain type; for iq1_s/iq1_m a type quantized directly). ik has
# no TQ1_0/TQ2_0; its ternary types iq1_bn (1.625 bpw) and iq2_bn (2 bpw) stand in.
declare -A IKT=(
    [IQ1_S]=iq1_s,iq1_s_r4 [IQ1_M]=iq1_m,iq1_m_r4 [TQ1_0]=iq1_bn [TQ2_0]=iq2_bn,iq2_bn_r4
    [IQ2_XXS]=iq2_xxs,iq2_xxs_r4 [IQ2_XS]=iq2_xs,iq2_xs_r4 [IQ2_S]=iq2_s,iq2_s_r4
    [IQ3_XXS]=iq3_xxs,iq3_xxs_r4 [IQ3_S]=iq3_s,iq3_s_r4
    [Q2_K]=q2_K,q2_k_r4 [Q3_K]=q3_K,q3_k_r4 [IQ4_XS]=iq4_xs,iq4_xs_r8 [Q4_0]=q4_0,q4_0_r8
    [MXFP4]=mxfp4,mxfp4_r8 [Q4_K]=q4_K,q4_k_r4 [Q8_0]=q8_0,q8_0_r8
)
TYPES="${TYPES:-IQ1_S,IQ1_M,IQ2_XXS,IQ2_XS,IQ2_S,IQ3_XXS,IQ3_S,TQ1_0,TQ2_0,Q2_K,Q3_K,IQ4_XS,Q4_0,MXFP4}"
IFS=, read -ra WANT <<<"$TYPES"
for t in "${WANT[@]}"; do
    [[ -n "${IKT[$t]:-}" ]] || { echo "ik_gemv.sh: no ik mapping for type $t (${!IKT[*]})" >&2; exit 2; }
done
IFS=, read -ra SHAPE_LIST <<<"$SHAPES"

echo "== harness check (graph output vs dequantize + dot)" | tee "$OUT/check.md"
all_ik=$(for t in "${WANT[@]}"; do echo -n "${IKT[$t]},"; done)
nice -n 19 "$HARNESS" --check --types "${all_ik%,}" | tee -a "$OUT/check.md" ||
    echo "(some checks failed: see above)" | tee -a "$OUT/check.md"

for ((r = 1; r <= ROUNDS; r++)); do
    for t in "${WANT[@]}"; do
        echo "== round $r $t: one locked sitting ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
        flock /tmp/bench.lock nice -n -10 bash -c '
            matmul=$1 harness=$2 ours=$3 ik=$4 reps=$5 out=$6 r=$7 ik_first=$8; shift 8
            for shape in "$@"; do
                run_ours() { "$matmul" --only gemv --types "$ours" --shapes "$shape" > "$out/ours-$ours-$shape-r$r.md"; }
                run_ik() { "$harness" --types "$ik" --shapes "$shape" --reps "$reps" > "$out/ik-$ours-$shape-r$r.md"; }
                if (( (r + ik_first) % 2 )); then run_ours; run_ik; else run_ik; run_ours; fi
            done
        ' _ "$MATMUL" "$HARNESS" "$t" "${IKT[$t]}" "$REPS" "$OUT" "$r" "$IK_FIRST" "${SHAPE_LIST[@]}"
        echo "   done $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
python3 bench/ik_gemv/report.py "$OUT" | tee "$OUT/table.md"
