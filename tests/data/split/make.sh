#!/bin/sh
# Makes the split set used by the split-set tests: deepseek-v3-tiny-Q4_K_M.gguf cut by
# llama.cpp's own tool into 3 parts of at most 14 tensors (the first part holds the
# metadata). Needs a llama.cpp build (bench/build-llama-cpp.sh); CI uses the committed files.
#   LLAMA_BIN=~/.cache/ferromoe/llama.cpp/build/bin sh tests/data/split/make.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${LLAMA_BIN:-$HOME/.cache/ferromoe/llama.cpp/build/bin}
rm -f "$here"/deepseek-v3-tiny-Q4_K_M-0000*-of-0000*.gguf
"$bin/llama-gguf-split" --split --split-max-tensors 14 \
    "$here/../tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf" \
    "$here/deepseek-v3-tiny-Q4_K_M"
