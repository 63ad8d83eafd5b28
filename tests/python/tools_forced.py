"""Forced tool calls on a tiny random-weight MoE model served with a real template
(tests/data/templates/real: Qwen3's Hermes, DeepSeek V3.1 and R1, Kimi-K2, gpt-oss):
random weights never choose to call a tool, so `tool_choice` "required" / a named
function (OpenAI) and `any` / `tool` (Anthropic) must make the reply a call — by
constraining it to the template's call syntax with the tool's argument schema — and the
round trip (call → tool result → answer) must go through, with the official `openai` and
`anthropic` clients."""
import json

import anthropic
import jsonschema
import openai

from common import args, check

a = args()
client = openai.OpenAI(base_url=a.base + "/v1", api_key=a.api_key, max_retries=0, timeout=120)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                           "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "get_time", "description": "Local time",
                                           "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}},
                                                          "required": ["zone"], "additionalProperties": False}}}]
question = [{"role": "user", "content": "What is the weather in Paris?"}]


def ask(messages, **kw):
    return client.chat.completions.create(model=a.model, messages=messages, tools=TOOLS, max_tokens=320,
                                          temperature=0, **kw)


named = {"type": "function", "function": {"name": "get_weather"}}
r = ask(question, tool_choice=named)
c = r.choices[0]
check(c.finish_reason == "tool_calls" and len(c.message.tool_calls or []) == 1, f"named: one call: {c}")
call = c.message.tool_calls[0]
check(call.function.name == "get_weather", f"named: the named function: {call.function.name}")
jsonschema.validate(json.loads(call.function.arguments), SCHEMA)
check(True, f"named: arguments valid against the schema: {call.function.arguments}")

# Streamed: the same call.
by_index, finish = {}, None
for chunk in ask(question, tool_choice=named, stream=True):
    for ch in chunk.choices:
        for tc in ch.delta.tool_calls or []:
            slot = by_index.setdefault(tc.index, {"name": "", "arguments": ""})
            slot["name"] += (tc.function.name or "") if tc.function else ""
            slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = ch.finish_reason or finish
check(finish == "tool_calls" and by_index == {0: {"name": "get_weather", "arguments": call.function.arguments}},
      f"named, streamed: the same call: {by_index}")

# "required": a call of one of the tools, valid against that tool's schema.
r = ask(question, tool_choice="required")
calls = r.choices[0].message.tool_calls or []
check(r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
      and calls[0].function.name in ("get_weather", "get_time"), f"required: a call: {r.choices[0]}")
schema = SCHEMA if calls[0].function.name == "get_weather" else TOOLS[1]["function"]["parameters"]
jsonschema.validate(json.loads(calls[0].function.arguments), schema)

# The round trip: the tool's result goes back; "auto" lets the model answer.
history = question + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"forecast": "sunny"})},
]
r2 = ask(history)
check(r2.choices[0].finish_reason in ("stop", "length") and r2.usage.prompt_tokens > r.usage.prompt_tokens,
      f"round trip: an answer after the tool result: {r2.choices[0]}")

# Forcing together with response_format is refused, not half-honoured.
try:
    ask(question, tool_choice="required", response_format={"type": "json_object"})
    check(False, "tool_choice required + response_format accepted")
except openai.BadRequestError as e:
    check("cannot be combined" in str(e), f"required + response_format is a 400: {e}")

# Anthropic: `tool` and `any` force a tool_use block.
an = anthropic.Anthropic(base_url=a.base, api_key=a.api_key, max_retries=0, timeout=120)
A_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"]} for t in TOOLS]
m = an.messages.create(model=a.model, max_tokens=320, messages=question, tools=A_TOOLS,
                       tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0})
uses = [b for b in m.content if b.type == "tool_use"]
check(m.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather"
      and json.dumps(uses[0].input, separators=(",", ":")) == json.dumps(json.loads(call.function.arguments), separators=(",", ":")),
      f"anthropic tool: the same call as OpenAI's: {m.content}")
m = an.messages.create(model=a.model, max_tokens=320, messages=question, tools=A_TOOLS,
                       tool_choice={"type": "any"}, extra_body={"temperature": 0})
check(m.stop_reason == "tool_use" and [b.type for b in m.content if b.type == "tool_use"] == ["tool_use"],
      f"anthropic any: a call: {m.content}")
print("forced tools: all checks passed")
