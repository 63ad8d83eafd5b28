"""Structured output, log-probabilities and logit_bias with the official `openai` and
`ollama` packages against `ferromoe serve`: schema-constrained output that parses and
validates (jsonschema), json_object, a GBNF and a Lark grammar, Ollama `format`;
log-probabilities equal to the model's own log-softmax (`ferromoe logits` for the same
prefix), streamed and not; logit_bias -100 bans a token and +100 forces one."""
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

import jsonschema
import ollama
import openai

from common import check, tokenize

import argparse

p = argparse.ArgumentParser()
p.add_argument("--base", required=True)
p.add_argument("--ferromoe", required=True)
p.add_argument("--model-file", required=True)
p.add_argument("--model", default="tiny")
p.add_argument("--api-key", default="sk-no-key-needed")
p.add_argument("--demo", action="store_true", help="the server runs the demo model (a real chat model)")
a = p.parse_args()

client = openai.OpenAI(base_url=a.base + "/v1", api_key=a.api_key)
oll = ollama.Client(host=a.base, headers={"Authorization": f"Bearer {a.api_key}"})
M = a.model


def chat(messages, **kw):
    return client.chat.completions.create(model=M, messages=messages, temperature=0, **kw)


# --- Structured output -------------------------------------------------------------------
# A schema whose every valid output is short: the output must end within max_tokens even on
# a tiny random model.
BOUNDED = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "count", "ok"],
    "additionalProperties": False,
}
user = [{"role": "user", "content": "Pick a color and a count, as JSON."}]
rf = {"type": "json_schema", "json_schema": {"name": "pick", "schema": BOUNDED, "strict": True}}
r = chat(user, max_tokens=60, response_format=rf)
text = r.choices[0].message.content
check(r.choices[0].finish_reason == "stop", f"schema output ends by itself: {text!r}")
jsonschema.validate(json.loads(text), BOUNDED)
check(True, f"json_schema output parses and validates: {text}")
s = chat(user, max_tokens=60, response_format=rf, stream=True)
streamed = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
check(streamed == text, f"streamed schema output == non-streamed: {streamed!r}")
# Sampled (temperature 1) output is constrained too.
for seed in (1, 2, 3):
    r = client.chat.completions.create(model=M, messages=user, max_tokens=60, temperature=1.0, seed=seed, response_format=rf)
    jsonschema.validate(json.loads(r.choices[0].message.content), BOUNDED)
check(True, "sampled schema outputs validate (3 seeds)")
# The completions endpoint takes the same fields.
c = client.completions.create(model=M, prompt="JSON:", max_tokens=60, temperature=0, extra_body={"response_format": rf})
jsonschema.validate(json.loads(c.choices[0].text), BOUNDED)
check(True, f"completion with response_format validates: {c.choices[0].text}")

# GBNF (llama-server's `grammar`) and Lark (after %llguidance).
gbnf = 'root ::= answer ", " word\nanswer ::= "yes" | "no"\nword ::= [a-z]{1,12}\n'
r = chat([{"role": "user", "content": "Is the sky blue?"}], max_tokens=30, extra_body={"grammar": gbnf})
t = r.choices[0].message.content
check(re.fullmatch(r"(yes|no), [a-z]{1,12}", t) is not None and r.choices[0].finish_reason == "stop", f"GBNF grammar honoured: {t!r}")
lark = '%llguidance {}\nstart: "n=" NUM\nNUM: /[1-9][0-9]?/\n'
r = chat([{"role": "user", "content": "A number?"}], max_tokens=30, extra_body={"grammar": lark})
t = r.choices[0].message.content
check(re.fullmatch(r"n=[1-9][0-9]?", t) is not None, f"Lark grammar honoured: {t!r}")

# Bad schemas and grammars are 400s with the grammar engine's message.
for bad, what in [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}}, "bogus"),
    ({"grammar": "root ::= missing"}, "missing"),
    ({"grammar": "%llguidance {}\nstart: nothing_here"}, "nothing_here"),
    ({"response_format": {"type": "yaml"}}, "yaml"),
    ({"response_format": {"type": "json_object"}, "grammar": gbnf}, "only one"),
]:
    try:
        client.chat.completions.create(model=M, messages=user, max_tokens=5, extra_body=bad)
        raise AssertionError(f"accepted: {bad}")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and what in str(e), f"invalid constraint → 400 naming '{what}': {str(e)[:90]}")

# Ollama: format as a schema, and "json".
o = oll.chat(model=M, messages=user, format=BOUNDED, options={"temperature": 0, "num_predict": 60})
jsonschema.validate(json.loads(o.message.content), BOUNDED)
check(o.done_reason == "stop", f"ollama format=schema validates: {o.message.content}")
g = oll.generate(model=M, prompt="Pick a color as JSON.", format=BOUNDED, options={"temperature": 0, "num_predict": 60})
jsonschema.validate(json.loads(g.response), BOUNDED)
check(True, f"ollama generate format=schema validates: {g.response}")
parts = list(oll.chat(model=M, messages=user, format=BOUNDED, stream=True, options={"temperature": 0, "num_predict": 60}))
check("".join(x.message.content or "" for x in parts) == o.message.content, "ollama streamed format output == non-streamed")
try:
    oll.chat(model=M, messages=user, format={"type": "bogus"})
    raise AssertionError("bad ollama format accepted")
except ollama.ResponseError as e:
    check(e.status_code == 400 and "bogus" in e.error, f"ollama bad schema → 400: {e.error[:80]}")

if a.demo:
    # A real model writes sensible JSON under the constraint.
    person = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"},
                       "languages": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3}},
        "required": ["name", "age", "languages"], "additionalProperties": False,
    }
    r = chat([{"role": "user", "content": "Describe a fictional programmer as JSON."}], max_tokens=120,
             response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": person, "strict": True}})
    v = json.loads(r.choices[0].message.content)
    jsonschema.validate(v, person)
    check(r.choices[0].finish_reason == "stop", f"demo: person schema validates: {v}")
    r = chat([{"role": "user", "content": "Reply with a JSON object with the keys a and b set to 1 and 2."}], max_tokens=60,
             response_format={"type": "json_object"})
    v = json.loads(r.choices[0].message.content)
    check(isinstance(v, dict), f"demo: json_object output parses: {v}")
    o = oll.chat(model=M, messages=[{"role": "user", "content": "Reply with a JSON object with the keys a and b set to 1 and 2."}],
                 format="json", options={"temperature": 0, "num_predict": 60})
    check(isinstance(json.loads(o.message.content), dict), f"demo: ollama format=json parses: {o.message.content}")


# --- Log-probabilities --------------------------------------------------------------------
def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    hlen = struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + hlen].decode()
    if data[:6] != b"\x93NUMPY" or "'<f4'" not in header:
        raise AssertionError(f"not an f32 .npy: {header}")
    body = data[10 + hlen:]
    return list(struct.unpack(f"<{len(body) // 4}f", body))


def model_logprobs(ids):
    """log-softmax of the model's logits after `ids`, from `ferromoe logits`."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.npy")
        subprocess.run([a.ferromoe, "logits", "-m", a.model_file, "-t", "1", "--tokens", ",".join(map(str, ids)), "-o", out],
                       check=True, capture_output=True)
        logits = read_npy(out)
    m = max(logits)
    z = m + math.log(sum(math.exp(x - m) for x in logits))
    return [x - z for x in logits]


TOL = 2e-2  # the server decodes step by step, `ferromoe logits` prefills in one batch
# A prompt whose first tokens are whole characters on both models (a byte token would show
# as U+FFFD in the legacy shape, which has no `bytes`).
prompt = "Hello world"
prompt_ids = tokenize(a, prompt, add_special=True)
N = 4
c = client.completions.create(model=M, prompt=prompt, max_tokens=N, temperature=0, logprobs=5, extra_body={"ignore_eos": True})
lp = c.choices[0].logprobs
check(len(lp.tokens) == N and len(lp.token_logprobs) == N and len(lp.top_logprobs) == N and len(lp.text_offset) == N,
      f"completion logprobs: {N} of each")
check("".join(lp.tokens) == c.choices[0].text, "completion logprobs tokens spell the text")
check(lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(N)], f"text_offset: {lp.text_offset}")
ids = list(prompt_ids)
for k in range(N):
    want = model_logprobs(ids)
    best = max(range(len(want)), key=lambda i: (want[i], -i))
    check(abs(lp.token_logprobs[k] - want[best]) < TOL, f"step {k}: logprob {lp.token_logprobs[k]:.4f} = model's log-softmax {want[best]:.4f}")
    # {token: logprob}: two tokens with the same text share a key, so fewer may come.
    top = sorted(lp.top_logprobs[k].values(), reverse=True)
    ranked = sorted(want, reverse=True)[:5]
    check(1 <= len(top) <= 5 and abs(top[0] - ranked[0]) < TOL and all(any(abs(x - y) < TOL for y in ranked) for x in top),
          f"step {k}: top_logprobs are among the model's 5 best: {top} vs {ranked}")
    check(math.isclose(top[0], lp.token_logprobs[k], abs_tol=1e-6), f"step {k}: greedy token is the top one")
    ids.append(best)

# Chat: logprobs.content[] with bytes and sorted top_logprobs, streamed the same.
msgs = [{"role": "user", "content": "Say something."}]
r = chat(msgs, max_tokens=6, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
content = r.choices[0].logprobs.content
check(len(content) == r.usage.completion_tokens == 6, f"one logprobs entry per token: {len(content)}")
raw = b"".join(bytes(e.bytes) for e in content)
check(raw.decode("utf-8", "replace") == r.choices[0].message.content or raw.decode("utf-8", "replace").lstrip() == r.choices[0].message.content,
      f"entries' bytes spell the answer: {raw!r}")
for e in content:
    tops = [t.logprob for t in e.top_logprobs]
    check(len(tops) == 3 and tops == sorted(tops, reverse=True) and all(x <= 0 for x in tops), f"top_logprobs sorted: {tops}")
    check(e.top_logprobs[0].token == e.token and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6, f"greedy token {e.token!r} is the best")
    check(sum(math.exp(x) for x in tops) <= 1.0 + 1e-4, "probabilities sum to at most 1")
s = chat(msgs, max_tokens=6, logprobs=True, top_logprobs=3, stream=True, extra_body={"ignore_eos": True})
streamed = [e for ch in s if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
check([(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in content], "streamed chat logprobs == non-streamed")
cs = client.completions.create(model=M, prompt=prompt, max_tokens=N, temperature=0, logprobs=2, stream=True, extra_body={"ignore_eos": True})
toks = [t for ch in cs if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
check(toks == lp.tokens, f"streamed completion logprobs tokens == non-streamed: {toks}")
r0 = chat(msgs, max_tokens=2, logprobs=True)
check(all(e.top_logprobs == [] for e in r0.choices[0].logprobs.content), "logprobs without top_logprobs: empty lists")
check(chat(msgs, max_tokens=2).choices[0].logprobs is None, "no logprobs unless asked")
for bad in [dict(logprobs=True, top_logprobs=21), dict(top_logprobs=3)]:
    try:
        chat(msgs, max_tokens=2, **bad)
        raise AssertionError(f"accepted {bad}")
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"{bad} → 400")

# Ollama: logprobs / top_logprobs, same numbers as the OpenAI chat for the same conversation.
o = oll.chat(model=M, messages=msgs, logprobs=True, top_logprobs=3, options={"temperature": 0, "num_predict": 6, "ignore_eos": True})
check([(x.token, round(x.logprob, 5)) for x in o.logprobs] == [(e.token, round(e.logprob, 5)) for e in content],
      "ollama chat logprobs == openai chat logprobs")
check(all(len(x.top_logprobs) == 3 for x in o.logprobs), "ollama top_logprobs")
parts = list(oll.chat(model=M, messages=msgs, logprobs=True, stream=True, options={"temperature": 0, "num_predict": 6, "ignore_eos": True}))
check([x.token for p_ in parts for x in (p_.logprobs or [])] == [x.token for x in o.logprobs], "ollama streamed logprobs")
g = oll.generate(model=M, prompt="Say something.", logprobs=True, options={"temperature": 0, "num_predict": 3, "ignore_eos": True})
check(len(g.logprobs) == 3, "ollama generate logprobs")

# --- logit_bias ---------------------------------------------------------------------------
greedy_first = lp.tokens[0]
banned_id = ids[len(prompt_ids)]  # the greedy first token's id (from the logits above)
c = client.completions.create(model=M, prompt=prompt, max_tokens=1, temperature=0, logprobs=1, logit_bias={str(banned_id): -100})
check(c.choices[0].logprobs.tokens[0] != greedy_first, f"logit_bias -100 bans the greedy token {greedy_first!r}: got {c.choices[0].text!r}")
forced = tokenize(a, "the")
check(len(forced) == 1, "'the' is one token")
c = client.completions.create(model=M, prompt=prompt, max_tokens=3, temperature=0.8, seed=5, logprobs=0,
                              logit_bias={str(forced[0]): 100}, extra_body={"ignore_eos": True})
check(c.choices[0].text == "the" * 3, f"logit_bias +100 forces the token: {c.choices[0].text!r}")
try:
    client.completions.create(model=M, prompt=prompt, max_tokens=1, logit_bias={"99999999": 1})
    raise AssertionError("out-of-vocabulary logit_bias accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "vocabulary" in str(e), "logit_bias id outside the vocabulary → 400")
try:
    chat(msgs, max_tokens=2, n=2)
    raise AssertionError("n=2 accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400, "n=2 stays a 400")
print("structured client: all checks passed")
