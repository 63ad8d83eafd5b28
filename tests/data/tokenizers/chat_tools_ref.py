"""Reference renderings of tool conversations with the chat templates of the vocab-only
GGUFs here, by transformers' own renderer (`render_jinja_template`, which
`apply_chat_template` calls), for crates/text/tests/chat_tools.rs.

    python3 tests/data/tokenizers/chat_tools_ref.py   # writes chat-tools-ref.json

Arguments reach each template as a client sends them: an object for templates that
write them with `tojson` (Qwen2.5), the JSON text for templates that concatenate
strings (DeepSeek-V3, whose template fails on an object).
"""
import gzip, json, os, tempfile

import transformers
from gguf import GGUFReader
from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City name"},
                                      "days": {"type": "integer"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                      "parameters": {"type": "object", "properties": {}}}},
]
ARGS = {"city": "Paris", "days": 2}


def conversation(string_args):
    args = json.dumps(ARGS) if string_args else ARGS
    return [
        {"role": "system", "content": "You help with travel."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}" if string_args else {}}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
        {"role": "assistant", "content": "It is 21 degrees at noon."},
        {"role": "user", "content": "Thanks! And tomorrow?"},
    ]


def template_and_tokens(name):
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(gzip.open(os.path.join(HERE, f"{name}-vocab.gguf.gz")).read())
        f.flush()
        r = GGUFReader(f.name)
        field = r.fields["tokenizer.chat_template"]
        tmpl = bytes(field.parts[field.data[0]]).decode()
        toks = r.fields["tokenizer.ggml.tokens"]
        def tok(key):
            fid = r.fields.get(key)
            if fid is None:
                return ""
            i = int(fid.parts[fid.data[0]][0])
            return bytes(toks.parts[toks.data[i]]).decode()
        return tmpl, tok("tokenizer.ggml.bos_token_id"), tok("tokenizer.ggml.eos_token_id")


out = {"transformers": transformers.__version__, "tools": TOOLS, "cases": []}
for name, string_args in [("qwen2.5", False), ("deepseek-v3", True)]:
    tmpl, bos, eos = template_and_tokens(name)
    msgs = conversation(string_args)
    rendered = render_jinja_template([msgs], tools=TOOLS, chat_template=tmpl, add_generation_prompt=True,
                                     bos_token=bos, eos_token=eos)[0][0]
    out["cases"].append({"tokenizer": name, "string_arguments": string_args, "messages": msgs,
                         "add_generation_prompt": True, "rendered": rendered})
with open(os.path.join(HERE, "chat-tools-ref.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print("wrote chat-tools-ref.json")
