"""Reasoning separated from the answer, with the official `openai` and `ollama` clients,
on a tiny model served with tests/data/templates/chatml-think.jinja: its generation
prompt opens <think> (as DeepSeek-R1's and Qwen3's do), and the random weights never
close it, so the whole reply is reasoning — unless thinking is switched off per request
(`enable_thinking`, `chat_template_kwargs`, Ollama's `think`), or left in the content
(`reasoning_format: "none"`)."""
import anthropic
import ollama
import openai

from common import args, check

a = args()
client = openai.OpenAI(base_url=a.base + "/v1", api_key=a.api_key, max_retries=0, timeout=60)
messages = [{"role": "user", "content": "Why is the sky blue?"}]
N = 12


def chat(**extra):
    body = {"ignore_eos": True, **extra.pop("extra_body", {})}
    return client.chat.completions.create(model=a.model, messages=messages, max_tokens=N, temperature=0,
                                          extra_body=body, **extra)


# As written: reasoning_format "none" leaves everything in the content.
raw = chat(extra_body={"reasoning_format": "none"}).choices[0].message
check(isinstance(raw.content, str) and len(raw.content.strip()) > 0, f"raw reply: {raw.content!r}")
check(getattr(raw, "reasoning_content", None) is None, "no reasoning_content with reasoning_format none")

# Separated (the default): all of it is reasoning, none of it content.
r = chat()
m = r.choices[0].message
check(m.reasoning_content == raw.content.lstrip(), f"reasoning_content {m.reasoning_content!r} == raw {raw.content!r}")
check(m.content == "", f"no content while still thinking: {m.content!r}")
check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == N, "finish and usage")

# Streamed: reasoning_content deltas only, the same text.
reasoning, content = [], []
for chunk in chat(stream=True):
    for c in chunk.choices:
        d = c.delta.model_dump()
        if d.get("reasoning_content"):
            reasoning.append(d["reasoning_content"])
        if d.get("content"):
            content.append(d["content"])
check("".join(reasoning) == m.reasoning_content and len(reasoning) > 1,
      f"streamed reasoning in {len(reasoning)} deltas == non-streamed")
check(content == [], f"no content deltas: {content}")

# Thinking off: the template writes an empty reasoning, the reply is content.
for how in [{"enable_thinking": False}, {"chat_template_kwargs": {"enable_thinking": False}}]:
    off = chat(extra_body=how).choices[0].message
    check(getattr(off, "reasoning_content", None) is None and len(off.content) > 0,
          f"{how}: content only: {off.content!r}")

# A bad reasoning_format is a 400, not ignored.
try:
    chat(extra_body={"reasoning_format": "sideways"})
    check(False, "reasoning_format 'sideways' accepted")
except openai.BadRequestError as e:
    check("reasoning_format" in str(e), f"reasoning_format 'sideways' is a 400: {e}")

# Ollama: `thinking`, streamed and not; think=False switches it off.
ol = ollama.Client(host=a.base, headers={"Authorization": f"Bearer {a.api_key}"})
opts = {"temperature": 0, "num_predict": N, "ignore_eos": True}
o = ol.chat(model=a.model, messages=messages, options=opts)
check(o.message.thinking == m.reasoning_content and o.message.content == "",
      f"ollama thinking {o.message.thinking!r} == openai reasoning_content")
parts = list(ol.chat(model=a.model, messages=messages, options=opts, stream=True))
check("".join(p.message.thinking or "" for p in parts) == o.message.thinking, "ollama streamed thinking")
check("".join(p.message.content or "" for p in parts) == "", "ollama streamed: no content")
o = ol.chat(model=a.model, messages=messages, options=opts, think=False)
check(not o.message.thinking and len(o.message.content) > 0, f"ollama think=False: content {o.message.content!r}")
# /api/generate (the prompt is one user turn): the same reasoning, `thinking` beside
# `response`.
g = ol.generate(model=a.model, prompt=messages[0]["content"], options=opts)
check(g.thinking == m.reasoning_content and g.response == "", f"generate thinking: {g.thinking!r}")
parts = list(ol.generate(model=a.model, prompt=messages[0]["content"], options=opts, stream=True))
check("".join(p.thinking or "" for p in parts) == g.thinking and all(not p.response for p in parts),
      "generate streamed thinking")
g = ol.generate(model=a.model, prompt=messages[0]["content"], options=opts, think=False)
check(not g.thinking and len(g.response) > 0, f"generate think=False: {g.response!r}")
# Anthropic: `thinking` blocks (streamed as thinking_delta), thinking disabled → text.
an = anthropic.Anthropic(base_url=a.base, api_key=a.api_key, max_retries=0, timeout=60)
body = {"temperature": 0, "ignore_eos": True}
am = an.messages.create(model=a.model, max_tokens=N, messages=messages, extra_body=body)
thinking = [b.thinking for b in am.content if b.type == "thinking"]
check(thinking == [m.reasoning_content] and not any(b.type == "text" and b.text for b in am.content),
      f"anthropic thinking block == openai reasoning_content: {am.content}")
deltas = []
with an.messages.stream(model=a.model, max_tokens=N, messages=messages, extra_body=body) as st:
    for ev in st:
        if ev.type == "content_block_delta" and ev.delta.type == "thinking_delta":
            deltas.append(ev.delta.thinking)
    final = st.get_final_message()
check("".join(deltas) == m.reasoning_content and len(deltas) > 1, f"anthropic streamed thinking in {len(deltas)} deltas")
check([b.type for b in final.content] == [b.type for b in am.content], f"anthropic streamed blocks: {final.content}")
off = an.messages.create(model=a.model, max_tokens=N, messages=messages, extra_body=body,
                         thinking={"type": "disabled"})
check([b.type for b in off.content] == ["text"] and len(off.content[0].text) > 0, f"anthropic thinking off: {off.content}")
print("reasoning: all checks passed")
