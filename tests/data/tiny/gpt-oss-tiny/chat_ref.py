"""HF's rendering of the gpt-oss (harmony) chat template for a few conversations, as
`chat_ref.json`: transformers' `apply_chat_template` with the tiny tokenizer and the template
`make.sh` put in the GGUF (the real gpt-oss-120b one, from the llama-cpp-python sdist). The
template writes today's date (`strftime_now`): the reference stores it as `DATE`.

Usage: python3 chat_ref.py TEMPLATE.jinja TOKENIZER_DIR OUT.json
"""

import json
import re
import sys

from transformers import PreTrainedTokenizerFast

template, tok_dir, out = sys.argv[1:]
tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
tok.chat_template = open(template).read()

conversations = [
    {"messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
    {
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "Quatre."},
            {"role": "user", "content": "And 3 + 3?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
        "add_generation_prompt": False,
    },
]
for c in conversations:
    text = tok.apply_chat_template(c["messages"], add_generation_prompt=c["add_generation_prompt"], tokenize=False)
    c["text"] = re.sub(r"Current date: \d{4}-\d{2}-\d{2}", "Current date: DATE", text)
json.dump({"source": "transformers apply_chat_template, openai-gpt-oss-120b.jinja", "conversations": conversations},
          open(out, "w"), indent=1, ensure_ascii=False)
print(conversations[1]["text"])
