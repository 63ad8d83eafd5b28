"""The official `openai` package against `ferromoe serve`: chat, streamed chat,
completions (plain and streamed), stop strings, seeds, exact usage, errors."""
import openai

from common import args, chatml, check, tokenize

a = args()
client = openai.OpenAI(base_url=a.base + "/v1", api_key=a.api_key, max_retries=0, timeout=60)

models = client.models.list()
check([m.id for m in models.data] == [a.model], f"models.list() names the served model: {models.data}")
check(client.models.retrieve(a.model).id == a.model, "models.retrieve() of the served model")

messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]
prompt_ids = tokenize(a, chatml(messages))

# Chat, not streamed.
r = client.chat.completions.create(model=a.model, messages=messages, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
text = r.choices[0].message.content
check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", "chat completion shape")
check(isinstance(text, str) and len(text) > 0, f"chat answer: {text!r}")
check(r.choices[0].finish_reason == "length", f"finish_reason length: {r.choices[0].finish_reason}")
check(r.usage.prompt_tokens == len(prompt_ids), f"usage.prompt_tokens {r.usage.prompt_tokens} == ferromoe tokenize {len(prompt_ids)}")
check(r.usage.completion_tokens == 12, f"usage.completion_tokens {r.usage.completion_tokens} == max_tokens 12")
check(r.usage.total_tokens == len(prompt_ids) + 12, "usage.total_tokens")

# The same request streamed: same text, same usage.
stream = client.chat.completions.create(
    model=a.model, messages=messages, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
pieces, finish, usage, roles = [], None, None, []
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check(roles == ["assistant"], f"one role delta: {roles}")
check(len(pieces) > 1, f"streamed in {len(pieces)} pieces")
check("".join(pieces) == text, f"streamed text == non-streamed: {''.join(pieces)!r} vs {text!r}")
check(finish == "length", "streamed finish_reason")
check(usage is not None and usage.prompt_tokens == len(prompt_ids) and usage.completion_tokens == 12,
      f"streamed usage (include_usage): {usage}")

# max_completion_tokens is honoured too.
r = client.chat.completions.create(model=a.model, messages=messages, max_completion_tokens=3, temperature=0, extra_body={"ignore_eos": True})
check(r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length", "max_completion_tokens")

# Stop strings end the answer and are never shown.
cut = next(i for i in range(1, len(text) - 2) if text.find(text[i:i + 2]) == i and text[i:i + 2].strip())
stop = text[cut:cut + 2]
r = client.chat.completions.create(model=a.model, messages=messages, max_tokens=12, temperature=0, stop=[stop, "@@@"], extra_body={"ignore_eos": True})
check(r.choices[0].message.content == text[:cut], f"stop {stop!r}: {r.choices[0].message.content!r} == {text[:cut]!r}")
check(r.choices[0].finish_reason == "stop", "finish_reason stop after a stop string")
stream = client.chat.completions.create(model=a.model, messages=messages, max_tokens=12, temperature=0, stop=stop, stream=True, extra_body={"ignore_eos": True})
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
check(streamed == text[:cut], f"stop string never streamed: {streamed!r}")

# Completions: the prompt gets BOS/EOS as the file says (ferromoe tokenize --add-special).
prompt = "Once upon a time"
c = client.completions.create(model=a.model, prompt=prompt, max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
check(c.object == "text_completion" and len(c.choices[0].text) > 0, f"completion: {c.choices[0].text!r}")
check(c.usage.prompt_tokens == len(tokenize(a, prompt, add_special=True)), f"completion usage.prompt_tokens {c.usage.prompt_tokens}")
check(c.usage.completion_tokens == 10 and c.choices[0].finish_reason == "length", "completion usage.completion_tokens")
s = client.completions.create(model=a.model, prompt=prompt, max_tokens=10, temperature=0, stream=True, extra_body={"ignore_eos": True})
check("".join(x.choices[0].text for x in s if x.choices) == c.choices[0].text, "streamed completion == non-streamed")

# Sampling with a seed is reproducible; top_p/top_k/min_p/penalties are accepted.
kw = dict(model=a.model, prompt=prompt, max_tokens=16, temperature=1.0, top_p=0.9, seed=1234,
          presence_penalty=0.5, frequency_penalty=0.5, extra_body={"top_k": 50, "min_p": 0.01, "ignore_eos": True})
s1 = client.completions.create(**kw).choices[0].text
s2 = client.completions.create(**kw).choices[0].text
check(s1 == s2, f"same seed, same text: {s1!r} / {s2!r}")

# Errors come back as the package's exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    check(e.status_code == 404 and "no-such-model" in str(e), "unknown model → 404 NotFoundError")
try:
    client.chat.completions.create(model=a.model, messages=messages, max_tokens=2, n=2)
    raise AssertionError("n=2 accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400, "n=2 → 400 BadRequestError")
print("openai client: all checks passed")
