#!/usr/bin/env bash
# Speculative decoding (prompt lookup) end to end on a real model: the same greedy request
# with `--spec-type off` and `--spec-type ngram`, alternating, through `ferromoe run --chat`.
# Checks that both outputs are byte-identical, then prints per run the decode rate, the
# end-to-end time (prefill + decode, from `--stats`) and the drafts accepted, and the
# speed-ups of the means.
#
#   bench/spec.sh [-m MODEL] [-p PROMPT_FILE] [-n TOKENS] [-t THREADS] [-r ROUNDS] [-T TEMP]
#
# Defaults: the demo model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M), the code-editing prompt
# bench/spec_prompts/code_edit.txt (a ~300-token function to rewrite), 400 tokens, 2
# threads, 3 rounds. bench/spec_prompts/free.txt (a story: little to copy) measures the
# overhead where drafts are rarely confirmed; with `-T 1.5` (sampling, seed 1: the
# outputs then differ and are not compared) the text is near random and drafts are almost
# never confirmed: the overhead of drafting that does not pay. Check `uptime` first:
# timings taken while others compile are noise.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FERROMOE:-target/release/ferromoe}
model="$HOME/.cache/ferromoe/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
prompt=bench/spec_prompts/code_edit.txt
tokens=400
threads=2
rounds=3
temp=0
while getopts "m:p:n:t:r:T:" o; do
    case $o in
        m) model=$OPTARG ;;
        p) prompt=$OPTARG ;;
        n) tokens=$OPTARG ;;
        t) threads=$OPTARG ;;
        r) rounds=$OPTARG ;;
        T) temp=$OPTARG ;;
        *) exit 2 ;;
    esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model $(basename "$model"), prompt $prompt, $tokens tokens, $threads threads, temperature $temp, load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-6s %10s %10s %10s %s\n" round spec decode_tps e2e_s gen_tokens drafts
for r in $(seq 1 "$rounds"); do
    for spec in off ngram; do
        "$bin" run -m "$model" --chat -p "$(cat "$prompt")" --temp "$temp" --top-k 0 --top-p 1 --min-p 0 \
            --seed 1 --ignore-eos -n "$tokens" -t "$threads" --stats --spec-type "$spec" >"$tmp/out-$spec-$r" 2>"$tmp/err-$spec-$r"
        # "prompt P tokens, X tok/s · generated G tokens, Y tok/s"
        line=$(grep '^prompt ' "$tmp/err-$spec-$r")
        drafts=$(grep '^speculation:' "$tmp/err-$spec-$r" | sed 's/^speculation: //' || true)
        echo "$line" | awk -v r="$r" -v s="$spec" -v d="${drafts:--}" '{
            p = $2; pt = $4; g = $8; gt = $10;
            e2e = p / pt + (g - 1) / gt;
            printf "%-6s %-6s %10.2f %10.2f %10d %s\n", r, s, gt, e2e, g, d
        }' | tee -a "$tmp/table"
    done
    if [ "$temp" = 0 ] && ! cmp -s "$tmp/out-off-$r" "$tmp/out-ngram-$r"; then
        echo "ERROR: round $r: the outputs differ with speculation" >&2
        diff "$tmp/out-off-$r" "$tmp/out-ngram-$r" | head -20 >&2
        exit 1
    fi
done
[ "$temp" = 0 ] && echo "outputs byte-identical in every round"
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
awk '{ n[$2]++; tps[$2] += $3; e2e[$2] += $4 } END {
    printf "mean decode: off %.2f tok/s, ngram %.2f tok/s: %.2fx\n", tps["off"] / n["off"], tps["ngram"] / n["ngram"], (tps["ngram"] / n["ngram"]) / (tps["off"] / n["off"]);
    printf "mean end-to-end: off %.2f s, ngram %.2f s: %.2fx\n", e2e["off"] / n["off"], e2e["ngram"] / n["ngram"], (e2e["off"] / n["off"]) / (e2e["ngram"] / n["ngram"]);
}' "$tmp/table"
