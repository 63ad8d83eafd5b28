"""What constrained sequences cost a batch (issue 18): against a running `ferromoe serve`
with --max-seqs ≥ N, rounds of N concurrent greedy chat requests of the same length, all
unconstrained then all under a JSON schema (alternating); prints each round's aggregate
decode speed (tokens / wall time of the batch), the mean `predicted_per_second`, and
the grammar's time (`timings.grammar_ms`, summed over the batch) as a share of the wall time.

    python3 bench/constrained_server.py http://127.0.0.1:PORT MODEL_NAME [N=4] [ROUNDS=3] [TOKENS=48]
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

base, model = sys.argv[1], sys.argv[2]
n, rounds, tokens = (int(x) for x in (sys.argv[3:] + ["4", "3", "48"][len(sys.argv) - 3:])[:3])
schema = {"type": "object",
          "properties": {"bio": {"type": "string", "minLength": 4000}, "name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["bio", "name", "age"], "additionalProperties": False}
prompts = [f"Describe fictional programmer number {i} as JSON: first a long bio, then name and age." for i in range(n)]


def one(prompt, constrained):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": tokens, "ignore_eos": True}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    r = requests.post(base + "/v1/chat/completions", json=body, timeout=600).json()
    t = r["timings"]
    return t["predicted_n"], t["predicted_per_second"], t["grammar_ms"]


def batch(constrained):
    t = time.time()
    with ThreadPoolExecutor(n) as ex:
        res = list(ex.map(lambda p: one(p, constrained), prompts))
    wall = time.time() - t
    # The masks are computed on the scheduler thread, one sequence after the other: their
    # sum over the batch is time every stream waited.
    grammar_share = sum(r[2] for r in res) / 1e3 / wall
    return sum(r[0] for r in res) / wall, sum(r[1] for r in res) / n, [r[0] for r in res], grammar_share


batch(True)  # warm up (and build the token trie)
for r in range(rounds):
    for constrained in (False, True):
        agg, per, counts, share = batch(constrained)
        print(f"round {r + 1} {'schema' if constrained else 'free  '}: {n} streams, {agg:.1f} tok/s together, "
              f"{per:.1f} tok/s per stream, tokens {counts}, grammar {100 * share:.2f}% of the wall time")
