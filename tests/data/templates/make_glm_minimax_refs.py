#!/usr/bin/env python3
"""Chat-template references for GLM-4.5/4.6 and MiniMax-M2 (issue 19): the templates
llama.cpp ships for them (models/templates/GLM-4.6.jinja and MiniMax-M2.jinja of the
llama-cpp-python sdist on PyPI, the files' own templates; the real tokenizers are not on
PyPI) rendered by HF transformers' `apply_chat_template` on a few conversations.

Writes <name>.chat-ref.json next to this script: the template source, the BOS/EOS texts
passed to it, and each conversation with its rendering. Needs transformers (made with
5.24.0) and the llama.cpp source under ~/.cache/ferromoe/llama.cpp (LLAMA_DIR).
"""

import json
import os
from pathlib import Path

from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
LLAMA = Path(os.environ.get("LLAMA_DIR", Path.home() / ".cache/ferromoe/llama.cpp"))
TINY = HERE.parent / "tiny/tokenizer/tokenizer.json"

CONVERSATIONS = [
    {"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Japan? Answer in one word."}],
     "add_generation_prompt": True},
    {"messages": [
        {"role": "user", "content": "Hello!"}],
     "add_generation_prompt": True},
    {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>Simple sum.</think>\n4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>Again.</think>6"}],
     "add_generation_prompt": False},
]

# (name, template file, bos text, eos text) as the real tokenizers name them.
TEMPLATES = [
    ("glm-4.6", "GLM-4.6.jinja", "[gMASK]", "<|endoftext|>"),
    ("minimax-m2", "MiniMax-M2.jinja", "]~!b[", "[e~["),
]


def main():
    for name, file, bos, eos in TEMPLATES:
        source = (LLAMA / "src/models/templates" / file).read_text()
        tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY), bos_token=bos, eos_token=eos)
        convs = []
        for c in CONVERSATIONS:
            rendered = tok.apply_chat_template(c["messages"], chat_template=source, tokenize=False,
                                               add_generation_prompt=c["add_generation_prompt"])
            convs.append({**c, "rendered": rendered})
        out = {"source": f"llama-cpp-python sdist: vendor/llama.cpp/models/templates/{file}",
               "chat_template": source, "bos_token": bos, "eos_token": eos, "conversations": convs}
        json.dump(out, open(HERE / f"{name}.chat-ref.json", "w"), indent=1, ensure_ascii=False)
        print(name, [len(c["rendered"]) for c in convs])


if __name__ == "__main__":
    main()
