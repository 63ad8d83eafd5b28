#!/usr/bin/env bash
# What a JSON-schema constraint costs at decode (issue 18): alternating runs of
# `ferromoe run --stats` on the same chat prompt, without and with `--json-schema`
# (greedy, --ignore-eos; the prompt asks for a long free-text "bio" first, so the
# constrained output usually runs the same number of tokens: check the counts). Prints
# each run's decode speed and, for the constrained ones, the time the grammar took
# (masks + commits) per token and its share of the decode.
#
#   bench/constrained.sh MODEL.gguf [ROUNDS=3] [TOKENS=64]     (THREADS=2 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: bench/constrained.sh MODEL.gguf [ROUNDS] [TOKENS]}
ROUNDS=${2:-3}
TOKENS=${3:-64}
THREADS=${THREADS:-2}
BIN=target/release/ferromoe
[ -x "$BIN" ] || cargo build --release -p ferromoe
SCHEMA=$(mktemp --suffix=.json)
trap 'rm -f "$SCHEMA"' EXIT
cat >"$SCHEMA" <<'JSON'
{"type": "object",
 "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "bio": {"type": "string"},
                "languages": {"type": "array", "items": {"type": "string"}}},
 "required": ["bio", "name", "age", "languages"], "additionalProperties": false}
JSON
PROMPT="Describe a fictional programmer as JSON: first a long bio, then name, age and languages."
run() {
    "$BIN" run -m "$MODEL" -t "$THREADS" --chat -p "$PROMPT" -n "$TOKENS" --temp 0 --ignore-eos --stats "$@" 2>&1 >/dev/null |
        grep -E '^(prompt|grammar) ' | sed -E 's/^prompt .* · //' | paste -sd' ' -
}
echo "model $(basename "$MODEL"), $TOKENS tokens, $THREADS threads, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    echo "round $r free:   $(run)"
    echo "round $r schema: $(run --json-schema "$SCHEMA")"
done
