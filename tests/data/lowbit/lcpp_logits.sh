#!/usr/bin/env bash
# llama.cpp's reference logits for the low-bit tiny models here: builds lcpp_logits.c against
# the static libllama of the local llama.cpp build, runs it on every deepseek-v3-tiny-*.gguf of
# this directory for the three tiny prompts (/work/shared/testdata/tiny/tokenizer/prompts.json,
# also in tests/data/tiny) and writes lcpp_<NAME>_logits_all_p<i>.npy ([tokens, vocab] f32).
#
# Usage: tests/data/lowbit/lcpp_logits.sh [NAME...]   (default: every model here; NAME as in
#        deepseek-v3-tiny-NAME.gguf, to (re)make only some references)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LLAMA=${LLAMA_DIR:-$HOME/.cache/ferromoe/llama.cpp}
PROMPTS=${PROMPTS:-$HERE/../tiny/tokenizer/prompts.json}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

B=$LLAMA/build
g++ -O2 -x c "$HERE/lcpp_logits.c" -x none -o "$WORK/lcpp_logits" -I"$LLAMA/src/include" \
    -I"$LLAMA/src/ggml/include" \
    "$B/src/libllama.a" "$B/ggml/src/libggml.a" "$B/ggml/src/libggml-cpu.a" \
    "$B/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -lm

if [ $# -gt 0 ]; then
    models=()
    for name in "$@"; do models+=("$HERE/deepseek-v3-tiny-$name.gguf"); done
else
    models=("$HERE"/deepseek-v3-tiny-*.gguf)
fi
for model in "${models[@]}"; do
    name=$(basename "$model" .gguf)
    name=${name#deepseek-v3-tiny-}
    python3 - "$WORK/lcpp_logits" "$model" "$PROMPTS" "$HERE/lcpp_${name}" <<'PY'
import json, subprocess, sys
import numpy as np
exe, model, prompts, prefix = sys.argv[1:]
for i, ids in enumerate(json.load(open(prompts))):
    raw = subprocess.run([exe, model, *map(str, ids)], check=True, capture_output=True).stdout
    logits = np.frombuffer(raw, dtype=np.float32).reshape(len(ids), -1)
    np.save(f"{prefix}_logits_all_p{i}.npy", logits)
    print(prefix.rsplit("/", 1)[1], f"p{i}", logits.shape, "top-1 of last:", int(logits[-1].argmax()))
PY
done
