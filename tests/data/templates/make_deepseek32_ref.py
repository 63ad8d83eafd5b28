#!/usr/bin/env python3
"""Chat-template reference for DeepSeek-V3.2 (issue 19). The released model ships no Jinja
template (its repository has a Python encoder, encoding/encoding_dsv32.py); llama.cpp ships
one that follows it (models/templates/deepseek-ai-DeepSeek-V3.2.jinja of the
llama-cpp-python sdist on PyPI), which is what a GGUF converted by llama.cpp carries. This
renders it with HF transformers' `apply_chat_template` on the conversations of
make_glm_minimax_refs.py, with and without thinking, into deepseek-v3.2.chat-ref.json (same
format as the GLM/MiniMax references).

Needs transformers (made with 5.25.0) and the llama.cpp source under
~/.cache/ferromoe/llama.cpp (LLAMA_DIR).
"""

import json
import os
import sys
from pathlib import Path

from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_glm_minimax_refs import CONVERSATIONS, LLAMA, TINY  # noqa: E402

FILE = "deepseek-ai-DeepSeek-V3.2.jinja"
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


def main():
    source = (LLAMA / "src/models/templates" / FILE).read_text()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY), bos_token=BOS, eos_token=EOS)
    convs = []
    for c in CONVERSATIONS:
        for thinking in [False, True]:
            rendered = tok.apply_chat_template(c["messages"], chat_template=source, tokenize=False,
                                               add_generation_prompt=c["add_generation_prompt"],
                                               thinking=thinking)
            convs.append({**c, "thinking": thinking, "rendered": rendered})
    out = {"source": f"llama-cpp-python sdist: vendor/llama.cpp/models/templates/{FILE}",
           "chat_template": source, "bos_token": BOS, "eos_token": EOS, "conversations": convs}
    json.dump(out, open(HERE / "deepseek-v3.2.chat-ref.json", "w"), indent=1, ensure_ascii=False)
    print([len(c["rendered"]) for c in convs])


if __name__ == "__main__":
    main()
