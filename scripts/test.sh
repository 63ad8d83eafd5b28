#!/usr/bin/env bash
# Runs the whole test suite (what CI runs). Installs what a fresh machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# The server tests drive `ferromoe serve` with real clients: the official `openai` and
# `anthropic` and `ollama` packages and `requests`; `jsonschema` validates structured output
# (tests/python/).
if ! python3 -c "import openai, anthropic, ollama, requests, jsonschema" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore openai anthropic ollama requests jsonschema
fi
# The chat page's script is tested under node (tests/js/, no npm packages needed).
if ! command -v node >/dev/null 2>&1; then
    echo "error: node (18 or later) is needed for the chat page test (tests/js/)" >&2
    exit 1
fi
# The GPU tier's tests run on Mesa's lavapipe, a software Vulkan device (correctness only:
# it runs at software speed). Without it they would skip; here a missing device fails them.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null; }
fi
export FERROMOE_REQUIRE_GPU=1
# Release mode: the kernels are tested at the optimisation level they ship with, and
# the model tests run in seconds instead of minutes.
exec cargo nextest run --workspace --release --no-fail-fast "$@"
