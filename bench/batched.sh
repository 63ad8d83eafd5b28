#!/usr/bin/env bash
# Multi-token decode, ferromoe vs llama.cpp, same file and threads, alternating:
#
# 1. Aggregate decode of B parallel sequences after a P-token prompt each:
#    `ferromoe bench --parallel B,… -p P -n N` against
#    `llama-batched-bench -npp P -ntg N -npl B,… -pps` (the prompt is processed once and
#    its KV copied into each sequence's own stream: the same attention work per step as
#    B separate prompts, without B× llama.cpp's slow prefill). Ratio of S_TG per B.
# 2. The k-token step curve of one sequence: `ferromoe bench --steps 1,2,4,…` (every
#    position's logits, as a draft's verification needs) against `llama-bench -p 1,2,4,…
#    -n 0` (a k-token batch from an empty cache, the last position's logits). Time per pass
#    and relative to k = 1, for both.
#
#   bench/batched.sh [-m MODEL] [-t THREADS] [-p P] [-n N] [-b B,…] [-k K,…] [-r ROUNDS] [-R REPS]
#
# Defaults: the demo 0.5B model, 2 threads, P = 512, N = 32, B = 1,2,4,8, K = 1,2,4,8,16,
# 1 round, 3 repetitions of each of ferromoe's tests and of llama-bench's. `-b none` or
# `-k none` skips that half (a big model: keep each locked run short). Run under
# `flock /tmp/bench.lock nice -n -10` on a quiet machine (check `uptime`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FERROMOE:-target/release/ferromoe}
llbin=${LLAMA_BIN:-$HOME/.cache/ferromoe/llama.cpp/build/bin}
model="$HOME/.cache/ferromoe/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
threads=2
pp=512
tg=32
npl=1,2,4,8
steps=1,2,4,8,16
rounds=1
reps=3
while getopts "m:t:p:n:b:k:r:R:" o; do
    case $o in
        m) model=$OPTARG ;;
        t) threads=$OPTARG ;;
        p) pp=$OPTARG ;;
        n) tg=$OPTARG ;;
        b) npl=$OPTARG ;;
        k) steps=$OPTARG ;;
        r) rounds=$OPTARG ;;
        R) reps=$OPTARG ;;
        *) exit 2 ;;
    esac
done
for f in "$bin" "$llbin/llama-batched-bench" "$llbin/llama-bench" "$model"; do
    [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
max_b=$(tr , '\n' <<<"$npl" | sort -n | tail -1)
[ "$npl" = none ] && max_b=1
n_kv=$((max_b * (pp + tg) + 64))
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "model $(basename "$model"), $threads threads, P = $pp, N = $tg, B = $npl, K = $steps, load $(load)"
for r in $(seq 1 "$rounds"); do
    if [ "$npl" != none ]; then
        echo "round $r: ferromoe --parallel (load $(load))"
        "$bin" bench -m "$model" -t "$threads" -p "$pp" -n "$tg" --parallel "$npl" -r "$reps" --json \
            2>"$tmp/err" >"$tmp/ours-par-$r.json" || { cat "$tmp/err" >&2; exit 1; }
        echo "round $r: llama-batched-bench (load $(load))"
        "$llbin/llama-batched-bench" -m "$model" -t "$threads" -tb "$threads" -c "$n_kv" -b 2048 -ub 512 \
            -npp "$pp" -ntg "$tg" -npl "$npl" -pps --output-format jsonl \
            2>"$tmp/err" | grep '^{' >"$tmp/llama-par-$r.jsonl" || { tail "$tmp/err" >&2; exit 1; }
    fi
    if [ "$steps" != none ]; then
        echo "round $r: ferromoe --steps (load $(load))"
        "$bin" bench -m "$model" -t "$threads" -p 0 -n 0 --steps "$steps" -r "$reps" --json \
            2>"$tmp/err" >"$tmp/ours-steps-$r.json" || { cat "$tmp/err" >&2; exit 1; }
        echo "round $r: llama-bench -p $steps -n 0 (load $(load))"
        "$llbin/llama-bench" -m "$model" -t "$threads" -p "$steps" -n 0 -r "$reps" -o json \
            2>"$tmp/err" >"$tmp/llama-steps-$r.json" || { tail "$tmp/err" >&2; exit 1; }
    fi
done
echo "load at the end: $(load)"
python3 - "$tmp" "$rounds" <<'EOF'
import json, os, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
mean = lambda v: sum(v) / len(v) if v else float("nan")
ours, theirs, ours_pp, theirs_pp = {}, {}, {}, {}
ours_k, theirs_k = {}, {}
for r in range(1, rounds + 1):
    if os.path.exists(f"{tmp}/ours-par-{r}.json"):
        for o in json.load(open(f"{tmp}/ours-par-{r}.json")):
            ours.setdefault(o["n_parallel"], []).append(o["avg_ts"])
            ours_pp.setdefault(o["n_parallel"], []).append(o["prefill_ts"])
        for line in open(f"{tmp}/llama-par-{r}.jsonl"):
            o = json.loads(line)
            theirs.setdefault(o["pl"], []).append(o["speed_tg"])
            theirs_pp.setdefault(o["pl"], []).append(o["speed_pp"])
    if os.path.exists(f"{tmp}/ours-steps-{r}.json"):
        for o in json.load(open(f"{tmp}/ours-steps-{r}.json")):
            # avg_ns covers 8 passes (STEP_PASSES of ferromoe bench).
            ours_k.setdefault(o["n_step"], []).append(o["avg_ns"] / 8 / 1e6)
        for o in json.load(open(f"{tmp}/llama-steps-{r}.json")):
            theirs_k.setdefault(o["n_prompt"], []).append(o["avg_ns"] / 1e6)
if ours:
    print()
    print("| B | ferromoe S_TG t/s | per seq | llama.cpp S_TG t/s | per seq | ratio | ferromoe S_PP | llama.cpp S_PP (shared prompt) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in sorted(ours):
        a, t = mean(ours[b]), mean(theirs.get(b, []))
        print(f"| {b} | {a:.2f} | {a / b:.2f} | {t:.2f} | {t / b:.2f} | {a / t:.2f} | "
              f"{mean(ours_pp[b]):.1f} | {mean(theirs_pp.get(b, [])):.1f} |")
if ours_k:
    print()
    print("| k | ferromoe ms/pass | rel. to k=1 | llama.cpp ms/pass | rel. to k=1 | time ratio ours/theirs |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    o1, t1 = mean(ours_k.get(1, [])), mean(theirs_k.get(1, []))
    for k in sorted(ours_k):
        a, t = mean(ours_k[k]), mean(theirs_k.get(k, []))
        print(f"| {k} | {a:.2f} | {a / o1:.2f} | {t:.2f} | {t / t1:.2f} | {a / t:.2f} |")
EOF
