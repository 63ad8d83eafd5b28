#!/usr/bin/env bash
# Builds the low-bit tiny models of tests/data/lowbit: deepseek-v3-tiny (BF16, from
# /work/shared/testdata/tiny) quantized by llama.cpp's llama-quantize to each type in TYPES,
# with an importance matrix from llama-imatrix on the same model (the i-quants refuse to
# quantize without one). The calibration text is the GPL-3 licence text (any text works with
# the tiny byte-level tokenizer).
#
# VARIANTS: one line per file, "NAME FTYPE [llama-quantize options]" -> deepseek-v3-tiny-NAME.gguf.
# To cover a new type, add a line (or a --tensor-type override to the mix, which keeps the
# committed bytes down: one ~1.3 MB file carries several types). --tensor-type patterns are
# regular expressions searched in the tensor name (ffn_down=... would also hit ffn_down_exps).
# MXFP4 rides as overrides on the iq1/ternary files: the MXFP4_MOE ftype puts every non-expert
# tensor in Q8_0 (a ~3.7 MB file).
#
# Usage: tests/data/lowbit/quantize.sh [OUT_DIR]   (default: this directory)
# To make only some files (the others' bytes then stay as committed), pass their lines:
#   VARIANTS="$(grep '^ternary ' tests/data/lowbit/quantize.sh)" tests/data/lowbit/quantize.sh
set -euo pipefail
VARIANTS=${VARIANTS:-"IQ2_XXS IQ2_XXS
IQ3_S IQ3_S
mix IQ2_XS --tensor-type ffn_gate_exps=iq2_s --tensor-type ffn_down_exps=iq3_xxs --tensor-type ffn_up_shexp=iq3_xxs --tensor-type attn_q_b=iq2_s
iq1 IQ1_S --tensor-type ffn_gate_exps=iq1_m --tensor-type attn_q_b=iq1_m --tensor-type ffn_up_shexp=iq1_m --tensor-type ffn_down_exps=mxfp4
ternary TQ1_0 --tensor-type ffn_up_exps=tq2_0 --tensor-type attn_q_b=tq2_0 --tensor-type ffn_gate_shexp=tq2_0 --tensor-type ffn_down_shexp=mxfp4 --tensor-type attn_output=mxfp4
"}
BIN=${LLAMA_BIN:-$HOME/.cache/ferromoe/llama.cpp/build/bin}
SRC=${SRC_GGUF:-/work/shared/testdata/tiny/deepseek-v3-tiny/deepseek-v3-tiny-BF16.gguf}
TEXT=${CALIB_TEXT:-/usr/share/common-licenses/GPL-3}
OUT=${1:-$(dirname "$0")}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$BIN/llama-imatrix" -m "$SRC" -f "$TEXT" -o "$WORK/imatrix.gguf" -c 128 -b 128 -t 2 \
    --chunks 64 >"$WORK/imatrix.log" 2>&1 || { cat "$WORK/imatrix.log"; exit 1; }
while read -r name ftype opts; do
    [ -n "$name" ] || continue
    # shellcheck disable=SC2086 # $opts is a list of options
    "$BIN/llama-quantize" --imatrix "$WORK/imatrix.gguf" $opts "$SRC" \
        "$OUT/deepseek-v3-tiny-$name.gguf" "$ftype" 2 >"$WORK/quantize-$name.log" 2>&1 \
        || { cat "$WORK/quantize-$name.log"; exit 1; }
done <<<"$VARIANTS"
