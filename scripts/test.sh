#!/usr/bin/env bash
# Runs the whole test suite (what CI runs). Installs what a fresh machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# Release mode: the kernels are tested at the optimisation level they ship with, and
# the model tests run in seconds instead of minutes.
exec cargo nextest run --workspace --release --no-fail-fast "$@"
