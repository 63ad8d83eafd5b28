#!/usr/bin/env bash
# Makes everything in this folder (see README.md here):
#   1. make.py: the tiny random-weight GptOssForCausalLM (transformers' own class) and HF's
#      float32 logits for the three shared prompts (ref/hf_logits_all_p{i}.npy);
#   2. llama.cpp's converter (convert_hf_to_gguf.py of the llama-cpp-python sdist) to an F32 GGUF,
#      with the tiny shared tokenizer and the real gpt-oss chat template (harmony format, from the
#      same sdist: models/templates/openai-gpt-oss-120b.jinja);
#   3. llama-quantize: MXFP4_MOE (experts MXFP4, the other matrices Q8_0, as the real files) and
#      Q8_0;
#   4. chat_ref.py: HF's apply_chat_template rendering of that template (chat_ref.json);
#   5. llama.cpp's logits on both files (../../lowbit/lcpp_logits.c: 2 threads, F32 KV cache,
#      flash attention off, the whole prompt in one batch): ref/lcpp_{TYPE}_logits_all_p{i}.npy.
#
# Needs: python3 with torch + transformers (a venv: PYTHON=...), the llama.cpp build of
# scripts/../bench (LLAMA_DIR, default ~/.cache/ferromoe/llama.cpp with src/ and build/).
# Usage: tests/data/tiny/gpt-oss-tiny/make.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LLAMA=${LLAMA_DIR:-$HOME/.cache/ferromoe/llama.cpp}
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" "$HERE/make.py" "$WORK/hf" "$HERE/ref"

# The tokenizer, with the gpt-oss chat template in place of the tiny ChatML one.
cp "$HERE/../tokenizer/tokenizer.json" "$WORK/hf/"
"$PYTHON" - "$HERE/../tokenizer/tokenizer_config.json" "$LLAMA/src/models/templates/openai-gpt-oss-120b.jinja" \
    "$WORK/hf/tokenizer_config.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["chat_template"] = open(sys.argv[2]).read()
json.dump(cfg, open(sys.argv[3], "w"), indent=2)
PY

# The converter does not know the tiny tokenizer's pre-tokenizer hash: it is GPT-2's regex.
"$PYTHON" - "$LLAMA/src" "$WORK/hf" "$WORK/gpt-oss-tiny-F32.gguf" <<'PY'
import sys
src, hf, out = sys.argv[1:]
sys.path[:0] = [f"{src}/gguf-py", src]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", hf, "--outtype", "f32", "--outfile", out]
convert_hf_to_gguf.main()
PY

# HF's rendering of that template (chat_ref.json).
"$PYTHON" "$HERE/chat_ref.py" "$LLAMA/src/models/templates/openai-gpt-oss-120b.jinja" "$WORK/hf" \
    "$HERE/chat_ref.json"

Q=$LLAMA/build/bin/llama-quantize
"$Q" "$WORK/gpt-oss-tiny-F32.gguf" "$HERE/gpt-oss-tiny-MXFP4_MOE.gguf" MXFP4_MOE > "$WORK/q1.log" 2>&1
"$Q" "$WORK/gpt-oss-tiny-F32.gguf" "$HERE/gpt-oss-tiny-Q8_0.gguf" Q8_0 > "$WORK/q2.log" 2>&1
cp "$WORK/hf/config.json" "$HERE/config.json"

B=$LLAMA/build
g++ -O2 -x c "$HERE/../../lowbit/lcpp_logits.c" -x none -o "$WORK/lcpp_logits" -I"$LLAMA/src/include" \
    -I"$LLAMA/src/ggml/include" \
    "$B/src/libllama.a" "$B/ggml/src/libggml.a" "$B/ggml/src/libggml-cpu.a" \
    "$B/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -lm
for ty in MXFP4_MOE Q8_0; do
    "$PYTHON" - "$WORK/lcpp_logits" "$HERE/gpt-oss-tiny-$ty.gguf" "$HERE/../tokenizer/prompts.json" \
        "$HERE/ref/lcpp_${ty}" <<'PY'
import json, subprocess, sys
import numpy as np
exe, model, prompts, prefix = sys.argv[1:]
for i, ids in enumerate(json.load(open(prompts))):
    raw = subprocess.run([exe, model, *map(str, ids)], check=True, capture_output=True).stdout
    logits = np.frombuffer(raw, dtype=np.float32).reshape(len(ids), -1)
    np.save(f"{prefix}_logits_all_p{i}.npy", logits)
    hf = np.load(prefix.rsplit("/", 1)[0] + f"/hf_logits_all_p{i}.npy")
    agree = (logits.argmax(-1) == hf.argmax(-1)).mean()
    print(prefix.rsplit("/", 1)[1], f"p{i}", logits.shape, f"max |lcpp - hf| {np.abs(logits - hf).max():.4g}",
          f"top-1 agreement with HF {agree:.3f}")
PY
done
ls -l "$HERE"/*.gguf
