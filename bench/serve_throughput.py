#!/usr/bin/env python3
"""Aggregate decode throughput of an OpenAI-compatible server under N concurrent requests.

For each N of --concurrency, --rounds times: N streaming chat requests are sent at once
(each with its own prompt, so no server can reuse another's prompt cache), greedy, with
``ignore_eos`` so that every request generates exactly --max-tokens tokens. Per N it
prints:

- ``tok/s wall``: the completion tokens of all N requests (from each stream's ``usage``)
  over the wall time from the first request sent to the last one done (prefill included);
- ``decode tok/s``: the aggregate decode rate, from the difference with N other requests
  of the same prompt length asking for ONE token (their own prompts, so no prompt cache
  helps): (tokens − N) / (wall − wall of the one-token set). It needs no streamed text,
  which a server may hold back (incomplete UTF-8 of a synthetic vocabulary);
- ``ttft``: the wall time of the one-token set (the prefill of N prompts together).

Used by bench/serve_throughput.sh against ``ferromoe serve`` and ``llama-server -np N``
(same file, same threads); works against any server speaking the OpenAI chat API with
``stream_options.include_usage``.

    python3 bench/serve_throughput.py --url http://127.0.0.1:8080/v1 --concurrency 1,2,4,8
"""

import argparse
import asyncio
import json
import sys
import time

from openai import AsyncOpenAI

TOPICS = [
    "a lighthouse keeper who collects lost letters",
    "the history of the printing press",
    "how a compiler turns source code into machine code",
    "a journey across a desert on a bicycle",
    "why the sky changes colour at sunset",
    "a city where it always rains on Tuesdays",
    "the life cycle of a star",
    "a robot learning to cook soup",
    "the rules of a board game nobody has played",
    "how bees decide where to build a hive",
    "a library that lends out memories",
    "the engineering of suspension bridges",
]


def prompt_for(i: int, tag: str) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"Request {tag}-{i}. Write a long, detailed text about {topic}. "
        "Keep going for as long as you can, with many paragraphs."
    )


async def one_request(client, model, prompt, max_tokens):
    """One streaming request, read to its end: its completion tokens (from `usage`)."""
    usage = None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
    if usage is None:
        raise RuntimeError("the stream reported no usage (stream_options.include_usage)")
    return usage.completion_tokens


async def run_set(url, model, n, max_tokens, tag):
    """N requests at once: (completion tokens, wall s). A fresh client (and connections)
    per set: a kept-alive connection the server has closed meanwhile would fail."""
    async with AsyncOpenAI(base_url=url, api_key="none", timeout=3600, max_retries=0) as client:
        start = time.perf_counter()
        tokens = await asyncio.gather(
            *(one_request(client, model, prompt_for(i, tag), max_tokens) for i in range(n))
        )
        return sum(tokens), time.perf_counter() - start


async def measure(url, model, n, max_tokens, rnd):
    # The tags have the same length, so both sets' prompts have the same token count.
    one_tokens, one_wall = await run_set(url, model, n, 1, f"p{rnd:03d}")
    tokens, wall = await run_set(url, model, n, max_tokens, f"d{rnd:03d}")
    return {
        "concurrency": n,
        "round": rnd,
        "completion_tokens": tokens,
        "wall_s": wall,
        "tps_wall": tokens / wall,
        "decode_tps": (tokens - one_tokens) / max(wall - one_wall, 1e-9),
        "ttft_s": one_wall,
    }


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--model", default="default", help="model name sent in the requests")
    ap.add_argument("--concurrency", default="1,2,4,8", help="comma-separated N values")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--label", default="", help="printed in each row (e.g. the engine)")
    ap.add_argument("--jsonl", help="also append each row, as a JSON object, to this file")
    ap.add_argument("--warmup", type=int, default=8, help="tokens of one warm-up request")
    args = ap.parse_args()
    ns = [int(x) for x in args.concurrency.split(",") if x]
    if not ns or min(ns) < 1 or args.max_tokens < 2 or args.rounds < 1:
        sys.exit("--concurrency values must be >= 1, --max-tokens >= 2, --rounds >= 1")
    if args.warmup > 0:
        await run_set(args.url, args.model, 1, args.warmup, "warm")
    print(f"{'engine':<12} {'N':>3} {'round':>5} {'tokens':>7} {'wall s':>8} "
          f"{'tok/s wall':>10} {'decode tok/s':>12} {'prefill s':>9}", flush=True)
    for n in ns:
        for rnd in range(1, args.rounds + 1):
            row = await measure(args.url, args.model, n, args.max_tokens, rnd)
            row["engine"] = args.label
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")
            print(f"{args.label:<12} {n:>3} {rnd:>5} {row['completion_tokens']:>7} "
                  f"{row['wall_s']:>8.2f} {row['tps_wall']:>10.2f} "
                  f"{row['decode_tps']:>12.2f} {row['ttft_s']:>9.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
