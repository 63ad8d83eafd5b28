"""The official `anthropic` package against `ferromoe serve`: messages (plain and
streamed), system prompts, stop sequences, max_tokens, prefill, count_tokens, usage with
the prefix cache, answers identical to the OpenAI route's, x-api-key auth and errors in
Anthropic's shape; then llama-server's /tokenize and /detokenize with `requests`."""
import anthropic
import openai
import requests

from common import args, chatml, check, tokenize

a = args()
B = a.base
client = anthropic.Anthropic(base_url=B, api_key=a.api_key, max_retries=0, timeout=60)
oai = openai.OpenAI(base_url=B + "/v1", api_key=a.api_key, max_retries=0, timeout=60)
# Greedy; the package (2.x) has no sampling keywords any more, so they go in the body as
# older clients send them. `ignore_eos` (llama.cpp's extension): an answer runs to
# max_tokens on any model.
GREEDY = {"temperature": 0}
EOS = {"temperature": 0, "ignore_eos": True}

system = "You are terse."
messages = [{"role": "user", "content": "Name three colours."}]
oai_messages = [{"role": "system", "content": system}] + messages
prompt_ids = tokenize(a, chatml(oai_messages))

# GET /v1/models serves both APIs' shapes.
models = client.models.list()
check([m.id for m in models.data] == [a.model] and models.data[0].type == "model" and models.has_more is False,
      f"models.list() names the served model: {models}")
m = client.models.retrieve(a.model)
check(m.id == a.model and m.display_name == a.model and m.created_at.year >= 2024, f"models.retrieve(): {m}")

# count_tokens: the rendered prompt's tokens (ChatML with a system turn on both the tiny
# models and Qwen2.5).
n = client.messages.count_tokens(model=a.model, system=system, messages=messages).input_tokens
check(n == len(prompt_ids), f"count_tokens {n} == ferromoe tokenize of the rendered prompt {len(prompt_ids)}")
blocks = [{"type": "text", "text": "You are "}, {"type": "text", "text": "terse."}]
n2 = client.messages.count_tokens(model=a.model, system=blocks, messages=messages).input_tokens
check(n2 == n, "system as text blocks counts the same as the string")

# Not streamed, run to max_tokens.
r = client.messages.create(model=a.model, system=system, messages=messages, max_tokens=12, extra_body=EOS)
text = r.content[0].text
check(r.type == "message" and r.role == "assistant" and r.id.startswith("msg_") and r.model == a.model, f"message shape: {r}")
check(len(r.content) == 1 and r.content[0].type == "text" and len(text) > 0, f"one text block: {r.content}")
check(r.stop_reason == "max_tokens" and r.stop_sequence is None, f"stop_reason max_tokens: {r.stop_reason}")
check(r.usage.output_tokens == 12, f"usage.output_tokens {r.usage.output_tokens} == max_tokens 12")
check(r.usage.input_tokens + r.usage.cache_read_input_tokens == n, f"input + cache read == count_tokens: {r.usage}")

# The same conversation again: the prefix cache serves most of the prompt.
r2 = client.messages.create(model=a.model, system=system, messages=messages, max_tokens=12, extra_body=EOS)
check(r2.content[0].text == text, "greedy answers repeat")
check(r2.usage.cache_read_input_tokens > 0 and r2.usage.input_tokens + r2.usage.cache_read_input_tokens == n,
      f"the prefix cache hits are cache_read_input_tokens: {r2.usage}")

# Byte-identical to the OpenAI route's greedy answer for the same conversation.
o = oai.chat.completions.create(model=a.model, messages=oai_messages, max_tokens=12, extra_body=EOS)
check(o.choices[0].message.content == text, f"OpenAI route: {o.choices[0].message.content!r} == {text!r}")
check(o.usage.prompt_tokens == n, "the OpenAI route's prompt_tokens == count_tokens")
# …also where the model ends by itself (end_turn ⇔ finish_reason stop).
r = client.messages.create(model=a.model, system=system, messages=messages, max_tokens=40, extra_body=GREEDY)
o = oai.chat.completions.create(model=a.model, messages=oai_messages, max_tokens=40, temperature=0)
check(r.content[0].text == o.choices[0].message.content, "natural end: same text as the OpenAI route")
pair = (r.stop_reason, o.choices[0].finish_reason)
check(pair in [("end_turn", "stop"), ("max_tokens", "length")], f"stop_reason matches finish_reason: {pair}")

# Streamed: text_stream pieces add up to the same text; the final message is complete.
with client.messages.stream(model=a.model, system=system, messages=messages, max_tokens=12, extra_body=EOS) as s:
    pieces = list(s.text_stream)
    final = s.get_final_message()
check(len(pieces) > 1 and "".join(pieces) == text, f"text_stream == non-streamed text: {pieces}")
check(final.content[0].text == text and final.stop_reason == "max_tokens" and final.usage.output_tokens == 12,
      f"final message: {final}")
check(final.id.startswith("msg_") and final.model == a.model, "final message id and model")
# The raw event sequence (the package drops `ping`).
kinds = [e.type for e in client.messages.create(model=a.model, messages=messages, max_tokens=5, stream=True, extra_body=EOS)]
check(kinds[:2] == ["message_start", "content_block_start"] and kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
      and set(kinds[2:-3]) == {"content_block_delta"}, f"event sequence: {kinds}")

# stop_sequences end the answer, are never shown and are named.
cut = next(i for i in range(1, len(text) - 2) if text.find(text[i:i + 2]) == i and text[i:i + 2].strip())
stop = text[cut:cut + 2]
r = client.messages.create(model=a.model, system=system, messages=messages, max_tokens=12,
                           stop_sequences=["@@@", stop], extra_body=EOS)
check(r.content[0].text == text[:cut], f"stop {stop!r}: {r.content[0].text!r} == {text[:cut]!r}")
check(r.stop_reason == "stop_sequence" and r.stop_sequence == stop, f"stop_reason stop_sequence, {r.stop_sequence!r}")
with client.messages.stream(model=a.model, system=system, messages=messages, max_tokens=12,
                            stop_sequences=[stop], extra_body=EOS) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
check(streamed == text[:cut] and final.stop_reason == "stop_sequence" and final.stop_sequence == stop,
      f"streamed stop sequence: {streamed!r}, {final.stop_reason}, {final.stop_sequence!r}")

# max_tokens is honoured.
r = client.messages.create(model=a.model, messages=messages, max_tokens=3, extra_body=EOS)
check(r.usage.output_tokens == 3 and r.stop_reason == "max_tokens", f"max_tokens 3: {r.usage}")

# Prefill: a last assistant message is continued; the answer holds only the new text,
# the same as a raw completion of the rendered prompt followed by the prefill.
prefill = "Red,"  # (Anthropic refuses a prefill ending in whitespace)
r = client.messages.create(model=a.model, system=system, messages=messages + [{"role": "assistant", "content": prefill}],
                           max_tokens=8, extra_body=EOS)
c = oai.completions.create(model=a.model, prompt=chatml(oai_messages) + prefill, max_tokens=8, extra_body=EOS)
check(r.content[0].text == c.choices[0].text, f"prefill continued: {r.content[0].text!r} == {c.choices[0].text!r}")
check(r.usage.input_tokens + r.usage.cache_read_input_tokens == c.usage.prompt_tokens, "prefill counted in the prompt")

# Consecutive messages of one role, and content as text blocks, are accepted.
r = client.messages.create(model=a.model, max_tokens=3, extra_body=GREEDY, messages=[
    {"role": "user", "content": [{"type": "text", "text": "Hi."}]}, {"role": "user", "content": "Again."}])
check(r.content[0].type == "text", "consecutive user messages")

# Auth: the key goes as x-api-key (what the package sends); a wrong one is a 401.
bad = anthropic.Anthropic(base_url=B, api_key="wrong", max_retries=0, timeout=60)
try:
    bad.messages.create(model=a.model, messages=messages, max_tokens=2)
    raise AssertionError("a wrong key was accepted")
except anthropic.AuthenticationError as e:
    check(e.status_code == 401 and e.body["error"]["type"] == "authentication_error", f"wrong x-api-key → 401: {e.body}")
H = {"x-api-key": a.api_key, "anthropic-version": "2023-06-01"}
ok = requests.post(B + "/v1/messages", headers=H, timeout=60,
                   json={"model": a.model, "max_tokens": 2, "messages": messages, "metadata": {"user_id": "u"}, "future_field": 1})
check(ok.status_code == 200 and ok.json()["type"] == "message", f"x-api-key + anthropic-version, unknown fields ignored: {ok.text}")
# Claude Code's form: a beta query and beta header, the key as a Bearer token (ANTHROPIC_AUTH_TOKEN).
ok = requests.post(B + "/v1/messages?beta=true", timeout=60, json={"model": a.model, "max_tokens": 2, "messages": messages},
                   headers={"Authorization": f"Bearer {a.api_key}", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "interleaved-thinking-2025-05-14"})
check(ok.status_code == 200 and ok.json()["type"] == "message", f"?beta=true with a Bearer key: {ok.text}")

# Errors: the package's exceptions, and every malformed request a 4xx in Anthropic's shape.
try:
    client.messages.create(model="claude-no-such-model", messages=messages, max_tokens=2)
    raise AssertionError("unknown model accepted")
except anthropic.NotFoundError as e:
    check(e.body["error"]["type"] == "not_found_error", "unknown model → 404 not_found_error")
# Tools: a template with a tool-call format takes them (the round trip is in tools.py);
# one without (the tiny models' ChatML) is a 400 that says so, never ignored.
caps = requests.post(B + "/api/show", json={"model": a.model}, timeout=60,
                     headers={"Authorization": f"Bearer {a.api_key}"}).json().get("capabilities", [])
A_TOOL = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
if "tools" in caps:
    t = client.messages.create(model=a.model, messages=messages, max_tokens=2, tools=A_TOOL)
    check(t.stop_reason in ("end_turn", "max_tokens", "tool_use"), f"tools taken by a template with calls: {t}")
else:
    try:
        client.messages.create(model=a.model, messages=messages, max_tokens=2, tools=A_TOOL)
        raise AssertionError("tools accepted by a template without a tool-call format")
    except anthropic.BadRequestError as e:
        check("tool-call format" in e.body["error"]["message"], f"tools → 400 no tool-call format: {e.body}")
user = messages
# (body, status, a word the message holds, whether count_tokens refuses it too: it
# reads the conversation, not the sampling settings)
cases = [
    ({"messages": user}, 400, "max_tokens", False),
    ({"max_tokens": 5}, 400, "messages", True),
    ({"max_tokens": 5, "messages": []}, 400, "at least one", True),
    ({"max_tokens": 0, "messages": user}, 400, "max_tokens", False),
    ({"max_tokens": "many", "messages": user}, 400, "max_tokens", True),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, "role", True),
    ({"max_tokens": 5, "messages": [{"role": "user"}]}, 400, "content", True),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, 400, "content", True),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400, "image", True),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}]}, 400, "cannot be in a user message", True),
    ({"max_tokens": 5, "messages": user, "tool_choice": {"type": "any"}}, 400, "requires a call", False),
    ({"max_tokens": 5, "messages": user, "thinking": {"type": "sometimes"}}, 400, "thinking.type", True),
    ({"max_tokens": 5, "messages": user, "temperature": "hot"}, 400, "temperature", True),
    ({"max_tokens": 5, "messages": user, "top_k": -1}, 400, "top_k", False),
    ({"max_tokens": 5, "messages": user, "temperature": -1}, 400, "temperature", False),
    ({"max_tokens": 5, "messages": user, "stop_sequences": "END"}, 400, "stop_sequences", True),
    ({"max_tokens": 5, "messages": user, "system": 5}, 400, "system", True),
    ({"max_tokens": 5, "messages": user, "model": "nope"}, 404, "nope", True),
]
for body, status, needle, both in cases:
    for path in ["/v1/messages"] + (["/v1/messages/count_tokens"] if both else []):
        r = requests.post(B + path, headers=H, json=body, timeout=60)
        e = r.json()
        check(r.status_code == status and e["type"] == "error" and isinstance(e["error"]["message"], str)
              and e["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
              and needle in e["error"]["message"], f"{path} {body} → {status}: {r.status_code} {r.text}")
# More shapes a confused client sends: each a 400 in Anthropic's shape, none a 5xx.
for body in [[], None, "x", 5, {"max_tokens": 5, "messages": "hi"}, {"max_tokens": 5, "messages": [1]},
             {"max_tokens": 5, "messages": [{"content": "x"}]},
             {"max_tokens": 5, "messages": [{"role": "user", "content": [1]}]},
             {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
             {"max_tokens": 5, "messages": [{"role": "user", "content": None}]},
             {"max_tokens": 1e30, "messages": user}, {"max_tokens": -3, "messages": user},
             {"max_tokens": 5, "messages": user, "stop_sequences": [1]},
             {"max_tokens": 5, "messages": user, "thinking": "on"}, {"max_tokens": 5, "messages": user, "tools": {}},
             {"max_tokens": 5, "messages": user, "tool_choice": {"type": "tool", "name": "f"}},
             {"max_tokens": 5, "messages": user, "system": [{"type": "image"}]},
             {"max_tokens": 5, "messages": user, "stream": "yes"}, {"max_tokens": 5, "messages": user, "top_p": 7}]:
    r = requests.post(B + "/v1/messages", headers=H, json=body, timeout=60)
    e = r.json()
    check(r.status_code == 400 and e["type"] == "error" and e["error"]["type"] == "invalid_request_error",
          f"{body!r} → 400: {r.status_code} {r.text}")
raw = [(b"{not json", 400), (b'{"max_tokens": 5, "messages": []} trailing', 400)]
for data, status in raw:
    r = requests.post(B + "/v1/messages", headers={**H, "content-type": "application/json"}, data=data, timeout=60)
    check(r.status_code == status and r.json()["error"]["type"] == "invalid_request_error", f"{data!r} → {r.status_code} {r.text}")
r = requests.post(B + "/v1/messages", headers={**H, "content-type": "text/plain"}, data=b"{}", timeout=60)
check(r.status_code == 415 and r.json()["type"] == "error", f"text/plain → 415: {r.text}")
r = requests.get(B + "/v1/messages", headers=H, timeout=60)
check(r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error", f"GET → 405: {r.text}")
r = requests.post(B + "/v1/messages", json={"max_tokens": 5, "messages": user}, timeout=60)
check(r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", f"no key → 401: {r.text}")

# llama-server's /tokenize and /detokenize.
T = {"Authorization": f"Bearer {a.api_key}"}
words = "Hello world, héllo!"
t = requests.post(B + "/tokenize", headers=T, json={"content": words}, timeout=60)
ids = t.json()["tokens"]
check(t.status_code == 200 and ids == tokenize(a, words), f"/tokenize == ferromoe tokenize: {t.text}")
t = requests.post(B + "/tokenize", headers=T, json={"content": words, "with_pieces": True}, timeout=60).json()["tokens"]
check([p["id"] for p in t] == ids, "with_pieces: the same ids")
raw_bytes = b"".join(bytes(p["piece"]) if isinstance(p["piece"], list) else p["piece"].encode() for p in t)
check(raw_bytes == words.encode(), f"with_pieces: the pieces are the text's bytes: {t}")
d = requests.post(B + "/detokenize", headers=T, json={"tokens": ids}, timeout=60)
check(d.status_code == 200 and d.json() == {"content": words}, f"/detokenize round trip: {d.text}")
special = "<|im_end|>"
one = requests.post(B + "/tokenize", headers=T, json={"content": special}, timeout=60).json()["tokens"]
plain = requests.post(B + "/tokenize", headers=T, json={"content": special, "parse_special": False}, timeout=60).json()["tokens"]
check(len(one) == 1 and len(plain) > 1, f"parse_special: {one} vs {plain}")
check(requests.post(B + "/detokenize", headers=T, json={"tokens": one}, timeout=60).json()["content"] == special,
      "special tokens are detokenized as their text")
added = requests.post(B + "/tokenize", headers=T, json={"content": words, "add_special": True}, timeout=60).json()["tokens"]
check(added == tokenize(a, words, add_special=True), "add_special as the file says")
check(requests.post(B + "/tokenize", headers=T, json={"content": ""}, timeout=60).json() == {"tokens": []}, "empty content")
for path, body in [("/detokenize", {"tokens": [10 ** 9]}), ("/detokenize", {"tokens": [-1]}), ("/detokenize", {"tokens": "x"}),
                   ("/detokenize", {}), ("/tokenize", {}), ("/tokenize", {"content": 5})]:
    r = requests.post(B + path, headers=T, json=body, timeout=60)
    check(r.status_code == 400 and isinstance(r.json()["error"]["message"], str), f"{path} {body} → 400: {r.text}")
r = requests.post(B + "/tokenize", json={"content": "x"}, timeout=60)
check(r.status_code == 401, "/tokenize needs the key when one is set")
print("anthropic client: all checks passed")
