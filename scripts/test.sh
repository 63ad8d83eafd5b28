#!/usr/bin/env bash
# Runs the whole test suite (what CI runs). Installs what a fresh machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# The server tests drive `ferromoe serve` with real clients: the official `openai`
# package, the official `ollama` package and `requests` (tests/python/).
if ! python3 -c "import openai, requests, ollama" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore openai requests ollama
fi
# The chat page's script is tested under node (tests/js/, no npm packages needed).
if ! command -v node >/dev/null 2>&1; then
    echo "error: node (18 or later) is needed for the chat page test (tests/js/)" >&2
    exit 1
fi
# Release mode: the kernels are tested at the optimisation level they ship with, and
# the model tests run in seconds instead of minutes.
exec cargo nextest run --workspace --release --no-fail-fast "$@"
