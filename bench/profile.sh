#!/usr/bin/env bash
# Where ferromoe's time goes: perf samples of one `ferromoe bench` test (pp or tg), reported
# as self time per function (release builds have no frame pointers, so inclusive call-graph
# times are not reliable; the leaf kernels say where the cycles go).
#
#   bench/profile.sh MODEL.gguf tg 32      # 32 decode steps
#   bench/profile.sh MODEL.gguf pp 512     # one 512-token prompt
# Env: FERROMOE (binary; default target/release/ferromoe), THREADS (2), PERF_DELAY_MS (start
# sampling after this many ms, to leave out the load and its weight repacking; default 0).
set -euo pipefail
MODEL="$1" TEST="${2:-tg}" N="${3:-32}"
FERROMOE="${FERROMOE:-${CARGO_TARGET_DIR:-target}/release/ferromoe}"
DATA="$(mktemp /tmp/ferromoe-perf.XXXXXX)"
if [[ "$TEST" == pp ]]; then args=(-p "$N" -n 0); else args=(-p 0 -n "$N"); fi
perf record -q -F 499 -D "${PERF_DELAY_MS:-0}" -o "$DATA" "$FERROMOE" bench -m "$MODEL" -t "${THREADS:-2}" -r 1 "${args[@]}" >&2
perf report -i "$DATA" --no-children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9.]+% ' | head -25
rm -f "$DATA"
