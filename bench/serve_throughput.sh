#!/usr/bin/env bash
# Serving throughput, ferromoe vs llama.cpp: the same client (bench/serve_throughput.py:
# N concurrent streaming chat requests, greedy, ignore_eos) against `ferromoe serve` and
# `llama-server` (continuous batching, its default), same model file, same threads,
# alternating. Only one server runs (and one model is loaded) at a time.
#
#   bench/serve_throughput.sh [-m MODEL] [-t THREADS] [-c N,…] [-n TOKENS] [-r ROUNDS] [-x] [-S SPEC]
#
# -c  concurrency values (default 1,2,4,8)
# -n  tokens per request (default 64)
# -r  rounds; each round starts ferromoe's server, measures every N, stops it, then does
#     the same with llama-server (default 1)
# -x  one server per N (`--max-seqs N` / `-np N`, the model loaded again for each N);
#     default: one server per round with as many slots as the largest N
# -S  ferromoe's --spec-type (default off: the same one-token-per-step decode as
#     llama-server's default; `ngram` measures prompt lookup riding in the batch)
#
# The decode rate is measured against N one-token requests of the same prompt length
# (see serve_throughput.py). Each server gets a context of 1024 positions per slot. Prints one table row per
# (engine, N, round) and, at the end, the ratio of the mean decode rates per N. Run it
# with `flock /tmp/bench.lock nice -n -10` on a quiet machine (check `uptime`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FERROMOE:-target/release/ferromoe}
llama=${LLAMA_SERVER:-$HOME/.cache/ferromoe/llama.cpp/build/bin/llama-server}
model="$HOME/.cache/ferromoe/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
threads=2
conc=1,2,4,8
tokens=64
rounds=1
per_n=0
spec=off
ctx=1024
port=18431
while getopts "m:t:c:n:r:xS:" o; do
    case $o in
        m) model=$OPTARG ;;
        t) threads=$OPTARG ;;
        c) conc=$OPTARG ;;
        n) tokens=$OPTARG ;;
        r) rounds=$OPTARG ;;
        x) per_n=1 ;;
        S) spec=$OPTARG ;;
        *) exit 2 ;;
    esac
done
for f in "$bin" "$llama" "$model"; do
    [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
tmp=$(mktemp -d)
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# Waits (up to 10 minutes: a big model loads slowly) for /health to answer 200.
wait_ready() {
    for _ in $(seq 1 1200); do
        if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the server exited; its log:" >&2
            tail -20 "$tmp/server.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "the server did not become ready" >&2
    exit 1
}

start_server() { # engine slots
    local engine=$1 slots=$2
    if [ "$engine" = ferromoe ]; then
        "$bin" serve -m "$model" -t "$threads" --port "$port" --max-seqs "$slots" \
            --ctx "$ctx" --spec-type "$spec" --model-name default >"$tmp/server.log" 2>&1 &
    else
        # -c is shared by the slots; -kvu/-fa left at their defaults.
        "$llama" -m "$model" -t "$threads" -tb "$threads" --port "$port" -np "$slots" \
            -c $((ctx * slots)) --cont-batching --no-warmup >"$tmp/server.log" 2>&1 &
    fi
    server_pid=$!
    wait_ready
}

client() { # engine concurrency-list
    python3 bench/serve_throughput.py --url "http://127.0.0.1:$port/v1" --concurrency "$2" \
        --max-tokens "$tokens" --label "$1" --jsonl "$tmp/rows.jsonl" | tail -n +2 || {
        echo "the client failed; the server's log:" >&2
        tail -20 "$tmp/server.log" >&2
        exit 1
    }
}

echo "model $(basename "$model"), $threads threads, N = $conc, $tokens tokens per request, ferromoe --spec-type $spec"
echo "load at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
IFS=, read -r -a ns <<<"$conc"
max_n=0
for n in "${ns[@]}"; do [ "$n" -gt "$max_n" ] && max_n=$n; done
for r in $(seq 1 "$rounds"); do
    for engine in ferromoe llama.cpp; do
        if [ "$per_n" = 1 ]; then
            for n in "${ns[@]}"; do
                start_server "$engine" "$n"
                client "$engine" "$n"
                stop_server
            done
        else
            start_server "$engine" "$max_n"
            client "$engine" "$conc"
            stop_server
        fi
        echo "  (load $(cut -d' ' -f1-3 /proc/loadavg))"
    done
done
python3 - "$tmp/rows.jsonl" <<'EOF'
import json, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1])]
dec, wall = defaultdict(list), defaultdict(list)
for r in rows:
    dec[(r["engine"], r["concurrency"])].append(r["decode_tps"])
    wall[(r["engine"], r["concurrency"])].append(r["tps_wall"])
mean = lambda v: sum(v) / len(v)
print("| N | ferromoe decode tok/s | llama-server decode tok/s | ratio | ferromoe wall tok/s | llama-server wall tok/s | ratio |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for n in sorted({k[1] for k in dec}):
    a, b = mean(dec[("ferromoe", n)]), mean(dec[("llama.cpp", n)])
    c, d = mean(wall[("ferromoe", n)]), mean(wall[("llama.cpp", n)])
    print(f"| {n} | {a:.2f} | {b:.2f} | {a / b:.2f} | {c:.2f} | {d:.2f} | {c / d:.2f} |")
EOF
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
