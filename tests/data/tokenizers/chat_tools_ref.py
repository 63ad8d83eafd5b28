"""Reference renderings of tool conversations with the chat templates of the vocab-only
GGUFs here, by transformers' own renderer (`render_jinja_template`, which
`apply_chat_template` calls), for crates/text/tests/chat_tools.rs.

    python3 tests/data/tokenizers/chat_tools_ref.py   # writes chat-tools-ref.json

A turn that is only calls has content "" (what ferromoe passes, as llama.cpp's minja does:
Qwen3's template fails on null and GLM's writes "None"; DeepSeek's writes the same text
for both). strftime_now (gpt-oss's "Current date") is the day of rendering: the test compares with
the date blanked. Arguments reach each template as a client sends them: an object for templates that
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
        {"role": "assistant", "content": "", "tool_calls": [
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


def shows_objects(tmpl, bos, eos):
    """What ferromoe's probe finds: a template that renders an object argument's value
    takes objects; one that fails or hides it takes the JSON text."""
    probe = [{"role": "user", "content": "probe"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"id": "call_probe", "type": "function",
                  "function": {"name": "probe_fn", "arguments": {"probe_key": "probe_value"}}}]}]
    try:
        text = render_jinja_template([probe], chat_template=tmpl, bos_token=bos, eos_token=eos)[0][0]
    except Exception:
        return False
    return "probe_value" in text


out = {"transformers": transformers.__version__, "tools": TOOLS, "cases": []}
for name, string_args in [("qwen2.5", False), ("deepseek-v3", True)]:
    tmpl, bos, eos = template_and_tokens(name)
    msgs = conversation(string_args)
    rendered = render_jinja_template([msgs], tools=TOOLS, chat_template=tmpl, add_generation_prompt=True,
                                     bos_token=bos, eos_token=eos)[0][0]
    out["cases"].append({"tokenizer": name, "string_arguments": string_args, "messages": msgs,
                         "add_generation_prompt": True, "rendered": rendered})
# Real templates of the other families (from llama.cpp's models/templates, which copies
# them from the models' repositories), under ../templates/real/.
REAL = [("Qwen-Qwen3-0.6B", "", "<|im_end|>", [{}, {"enable_thinking": False}]),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}, {"enable_thinking": True}]),
        ("deepseek-ai-DeepSeek-V3.1", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}, {"thinking": True}]),
        ("moonshotai-Kimi-K2", "", "<|im_end|>", [{}]),
        ("GLM-4.6", "", "", [{}, {"enable_thinking": False}]),
        ("openai-gpt-oss-120b", "<|startoftext|>", "<|return|>", [{}])]
for name, bos, eos, variants in REAL:
    with open(os.path.join(HERE, "..", "templates", "real", name + ".jinja")) as f:
        tmpl = f.read()
    string_args = not shows_objects(tmpl, bos, eos)
    for kwargs in variants:
        msgs = conversation(string_args)
        rendered = render_jinja_template([msgs], tools=TOOLS, chat_template=tmpl, add_generation_prompt=True,
                                         bos_token=bos, eos_token=eos, **kwargs)[0][0]
        out["cases"].append({"template": name, "bos_token": bos, "eos_token": eos, "kwargs": kwargs,
                             "string_arguments": string_args, "messages": msgs,
                             "add_generation_prompt": True, "rendered": rendered})
with open(os.path.join(HERE, "chat-tools-ref.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print("wrote chat-tools-ref.json")
