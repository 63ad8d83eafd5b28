#!/usr/bin/env bash
# Builds the low-bit tiny models of tests/data/lowbit: deepseek-v3-tiny (BF16, from
# /work/shared/testdata/tiny) quantized by llama.cpp's llama-quantize to each type in TYPES,
# with an importance matrix from llama-imatrix on the same model (the i-quants refuse to
# quantize without one). The calibration text is the GPL-3 licence text (any text works with
# the tiny byte-level tokenizer).
#
# VARIANTS: one line per file, "NAME FTYPE [llama-quantize options]" -> deepseek-v3-tiny-NAME.gguf.
# To cover a new type, add a line (or a --tensor-type override to the mix, which keeps the
# committed bytes down: one ~1.3 MB file carries several types).
#
# Usage: tests/data/lowbit/quantize.sh [OUT_DIR]   (default: this directory)
set -euo pipefail
VARIANTS=${VARIANTS:-"IQ2_XXS IQ2_XXS
IQ3_S IQ3_S
mix IQ2_XS --tensor-type ffn_gate_exps=iq2_s --tensor-type ffn_down_exps=iq3_xxs --tensor-type ffn_up_shexp=iq3_xxs --tensor-type attn_q_b=iq2_s"}
BIN=${LLAMA_BIN:-$HOME/.cache/ferromoe/llama.cpp/build/bin}
SRC=${SRC_GGUF:-/work/shared/testdata/tiny/deepseek-v3-tiny/deepseek-v3-tiny-BF16.gguf}
TEXT=${CALIB_TEXT:-/usr/share/common-licenses/GPL-3}
OUT=${1:-$(dirname "$0")}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$BIN/llama-imatrix" -m "$SRC" -f "$TEXT" -o "$WORK/imatrix.gguf" -c 128 -b 128 -t 2 \
    --chunks 64 >"$WORK/imatrix.log" 2>&1 || { cat "$WORK/imatrix.log"; exit 1; }
while read -r name ftype opts; do
    # shellcheck disable=SC2086 # $opts is a list of options
    "$BIN/llama-quantize" --imatrix "$WORK/imatrix.gguf" $opts "$SRC" \
        "$OUT/deepseek-v3-tiny-$name.gguf" "$ftype" 2 >"$WORK/quantize-$name.log" 2>&1 \
        || { cat "$WORK/quantize-$name.log"; exit 1; }
done <<<"$VARIANTS"
