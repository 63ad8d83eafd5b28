"""A tool-call round trip on the demo model (Qwen2.5-Coder-0.5B-Instruct, whose template
has Hermes tool calls) with the official `openai`, `ollama` and `anthropic` clients: request with
tools → `tool_calls` (non-streamed and streamed alike) → the tool's result → the answer.
The 0.5B model writes its calls as bare JSON objects (no <tool_call> tags), which the
server reads as llama.cpp does. Greedy decoding, so both clients see the same call."""
import json

import anthropic
import ollama
import openai

from common import args, check

a = args()
client = openai.OpenAI(base_url=a.base + "/v1", api_key=a.api_key, max_retries=0, timeout=120)
TOOLS = [{"type": "function", "function": {
    "name": "get_stock_price", "description": "Get the latest price of a stock",
    "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}}}]
question = [{"role": "user", "content": "What is the stock price of Apple (AAPL)?"}]
RESULT = json.dumps({"symbol": "AAPL", "price": 189.5})


def ask(messages, **kw):
    return client.chat.completions.create(model=a.model, messages=messages, tools=TOOLS, max_tokens=48,
                                          temperature=0, **kw)


# 1. The call, not streamed.
r = ask(question)
c = r.choices[0]
check(c.finish_reason == "tool_calls", f"finish_reason tool_calls: {c.finish_reason} {c.message}")
check(c.message.content is None, f"no content besides the call: {c.message.content!r}")
calls = c.message.tool_calls
check(len(calls) == 1 and calls[0].type == "function" and calls[0].id.startswith("call_"), f"one call: {calls}")
check(calls[0].function.name == "get_stock_price", f"function name: {calls[0].function.name}")
check(json.loads(calls[0].function.arguments) == {"symbol": "AAPL"}, f"arguments: {calls[0].function.arguments}")

# 2. Streamed: delta.tool_calls chunks (index, id, name, then argument fragments).
by_index, finish, content = {}, None, []
for chunk in ask(question, stream=True):
    for ch in chunk.choices:
        if ch.delta.content:
            content.append(ch.delta.content)
        for tc in ch.delta.tool_calls or []:
            slot = by_index.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
        if ch.finish_reason:
            finish = ch.finish_reason
check(finish == "tool_calls" and content == [], f"streamed: finish {finish}, content {content}")
check(list(by_index) == [0] and by_index[0]["name"] == "get_stock_price" and by_index[0]["id"].startswith("call_"),
      f"streamed call: {by_index}")
check(by_index[0]["arguments"] == calls[0].function.arguments, "streamed arguments == non-streamed")

# 3. The result goes back as a `tool` message; the model answers (in text).
history = question + [
    {"role": "assistant", "content": None, "tool_calls": [tc.model_dump() for tc in calls]},
    {"role": "tool", "tool_call_id": calls[0].id, "content": RESULT},
]
r2 = ask(history)
answer = r2.choices[0].message
check(r2.choices[0].finish_reason in ("stop", "length") and not answer.tool_calls, f"an answer, not a call: {answer}")
check(isinstance(answer.content, str) and answer.content.strip() != "", f"answer text: {answer.content!r}")
check(r2.usage.prompt_tokens > r.usage.prompt_tokens + 10, "the tool result is in the prompt")
check(r2.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 1,
      f"the first turn's prompt is reused from the cache: {r2.usage.prompt_tokens_details}")
streamed = "".join(ch.delta.content or "" for chunk in ask(history, stream=True) for ch in chunk.choices)
check(streamed == answer.content, f"streamed answer == non-streamed: {streamed!r}")

# tool_choice "none": the model is not offered the tools and answers in text.
r3 = ask(question, tool_choice="none")
check(r3.choices[0].finish_reason != "tool_calls" and not r3.choices[0].message.tool_calls,
      f"tool_choice none: {r3.choices[0]}")
# "required" and a named function: the reply is constrained to a call (llguidance, the
# Hermes syntax with the tool's schema), even for a question that needs no tool.
hello = [{"role": "user", "content": "Say hello."}]
for choice in ["required", {"type": "function", "function": {"name": "get_stock_price"}}]:
    rf = client.chat.completions.create(model=a.model, messages=hello, tools=TOOLS, max_tokens=96,
                                        temperature=0, tool_choice=choice)
    cf = rf.choices[0]
    check(cf.finish_reason == "tool_calls" and len(cf.message.tool_calls or []) == 1,
          f"tool_choice {choice}: a call: {cf}")
    fa = json.loads(cf.message.tool_calls[0].function.arguments)
    check(cf.message.tool_calls[0].function.name == "get_stock_price" and isinstance(fa.get("symbol"), str),
          f"tool_choice {choice}: the schema's arguments: {fa}")
try:
    ask(question, tool_choice={"type": "function", "function": {"name": "no_such_tool"}})
    check(False, "a named function that is not a tool accepted")
except openai.BadRequestError as e:
    check("not one of the tools" in str(e), f"unknown named function is a 400: {e}")

# 4. Ollama: the same round trip, arguments as an object.
ol = ollama.Client(host=a.base)
opts = {"temperature": 0, "num_predict": 48}
o = ol.chat(model=a.model, messages=question, tools=TOOLS, options=opts)
check(len(o.message.tool_calls or []) == 1, f"ollama: one call: {o.message}")
fn = o.message.tool_calls[0].function
check(fn.name == "get_stock_price" and dict(fn.arguments) == {"symbol": "AAPL"}, f"ollama call: {fn}")
streamed_calls = [tc for part in ol.chat(model=a.model, messages=question, tools=TOOLS, options=opts, stream=True)
                  for tc in (part.message.tool_calls or [])]
check(len(streamed_calls) == 1 and streamed_calls[0].function.name == fn.name
      and dict(streamed_calls[0].function.arguments) == dict(fn.arguments), f"ollama streamed call: {streamed_calls}")
oh = question + [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": fn.name, "arguments": dict(fn.arguments)}}]},
                 {"role": "tool", "content": RESULT, "tool_name": fn.name}]
o2 = ol.chat(model=a.model, messages=oh, tools=TOOLS, options=opts)
check(not o2.message.tool_calls and o2.message.content.strip() != "", f"ollama answer: {o2.message.content!r}")
check(o2.message.content == answer.content, "ollama's answer == openai's (same prompt, greedy)")
show = ol.show(a.model)
check("tools" in (show.capabilities or []), f"/api/show capabilities: {show.capabilities}")
# 5. Anthropic: the same round trip with tool_use / tool_result blocks.
an = anthropic.Anthropic(base_url=a.base, api_key=a.api_key, max_retries=0, timeout=120)
A_TOOLS = [{"name": f["function"]["name"], "description": f["function"]["description"],
            "input_schema": f["function"]["parameters"]} for f in TOOLS]


def an_ask(messages, **kw):
    # anthropic 2.x takes sampling settings in the body only.
    return an.messages.create(model=a.model, max_tokens=48, messages=messages, tools=A_TOOLS,
                              extra_body={"temperature": 0}, **kw)


m = an_ask(question)
uses = [b for b in m.content if b.type == "tool_use"]
check(m.stop_reason == "tool_use" and len(uses) == 1, f"anthropic: one tool_use block: {m}")
check(uses[0].name == "get_stock_price" and uses[0].input == {"symbol": "AAPL"}, f"anthropic call: {uses[0]}")
with an.messages.stream(model=a.model, max_tokens=48, messages=question, tools=A_TOOLS,
                        extra_body={"temperature": 0}) as stream:
    final = stream.get_final_message()
s_uses = [b for b in final.content if b.type == "tool_use"]
check(final.stop_reason == "tool_use" and len(s_uses) == 1 and s_uses[0].input == uses[0].input
      and s_uses[0].name == uses[0].name, f"anthropic streamed call: {final}")
ah = question + [
    {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": RESULT}]},
]
m2 = an_ask(ah)
text = "".join(b.text for b in m2.content if b.type == "text")
check(m2.stop_reason in ("end_turn", "max_tokens") and not any(b.type == "tool_use" for b in m2.content),
      f"anthropic: an answer, not a call: {m2}")
check(text == answer.content, f"anthropic's answer == openai's (same prompt, greedy): {text!r}")
count = an.messages.count_tokens(model=a.model, messages=ah, tools=A_TOOLS)
check(count.input_tokens == r2.usage.prompt_tokens, f"count_tokens with tools: {count.input_tokens}")
for choice in [{"type": "any"}, {"type": "tool", "name": "get_stock_price"}]:
    mf = an.messages.create(model=a.model, max_tokens=96, messages=hello, tools=A_TOOLS, tool_choice=choice,
                            extra_body={"temperature": 0})
    fu = [b for b in mf.content if b.type == "tool_use"]
    check(mf.stop_reason == "tool_use" and len(fu) == 1 and fu[0].name == "get_stock_price"
          and isinstance(fu[0].input.get("symbol"), str), f"anthropic tool_choice {choice}: a call: {mf}")
print("tools: all checks passed")
