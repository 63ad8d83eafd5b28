#!/usr/bin/env python3
"""A glm4moe tiny model whose MTP block drafts what the trunk will say (issue 20, MTP drafts).

With random weights an MTP block's drafts are always wrong, so no test would see a draft
confirmed, and none would notice the block paired with the wrong positions. This file is
built from `glm4moe-tiny-Q8_0.gguf` so that the block computes (nearly) the trunk's own
function one position ahead:

- trunk layer 0 does nothing (`attn_output` and `ffn_down` all zero): the trunk is the
  embedding, layer 1, the final norm and the output head;
- the embedding rows are scaled to an RMS of 1 (stored F32), so `enorm` (all ones) leaves
  them as they are;
- the block's layer (`blk.2.*`) is a copy of layer 1, `eh_proj` = [I 0] (F16: the
  normalised embedding passes, the trunk's hidden state is dropped), `shared_head_norm` =
  `output_norm`, and the head is the trunk's.

The block's row for the pair (trunk state at p, token at p + 1) then runs layer 1 on the
token at p + 1 over the tokens 1..p + 1 — the trunk's computation of position p + 1 less
token 0 in its attention — so it predicts the token at p + 2 as the trunk will, nearly
always, *if* the pairing is right; paired one position off, its drafts would repeat the
token just confirmed and fail. Tests: crates/engine/tests/speculative.rs.

Needs numpy and llama.cpp's gguf-py (LLAMA_DIR, default ~/.cache/ferromoe/llama.cpp).
Usage: python3 tests/data/tiny/make_glm4moe_mtp_copy.py
"""

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LLAMA = Path(os.environ.get("LLAMA_DIR", Path.home() / ".cache/ferromoe/llama.cpp"))
sys.path.insert(0, str(LLAMA / "src/gguf-py"))
import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

SRC = HERE / "glm4moe-tiny/glm4moe-tiny-Q8_0.gguf"
DST = HERE / "glm4moe-tiny/glm4moe-tiny-mtp-copy-Q8_0.gguf"


def main():
    r = gguf.GGUFReader(SRC)
    by_name = {t.name: t for t in r.tensors}
    dim = int(by_name["output_norm.weight"].data.shape[0])
    # name -> (data, type); the data as the writer takes it (raw bytes for quantized types).
    out = {}
    for t in r.tensors:
        out[t.name] = (np.array(t.data), t.tensor_type)
    for name in ["blk.0.attn_output.weight", "blk.0.ffn_down.weight"]:
        data, ty = out[name]
        assert ty == gguf.GGMLQuantizationType.Q8_0
        out[name] = (np.zeros_like(data), ty)  # d = 0, q = 0: every weight 0
    t = by_name["token_embd.weight"]
    e = dequantize(t.data, t.tensor_type).astype(np.float64)
    e /= np.sqrt((e * e).mean(axis=1, keepdims=True))
    out["token_embd.weight"] = (e.astype(np.float32), gguf.GGMLQuantizationType.F32)
    for name in list(out):
        if name.startswith("blk.1."):
            data, ty = out[name]
            out["blk.2." + name[len("blk.1."):]] = (data.copy(), ty)
    eh = np.zeros((dim, 2 * dim), dtype=np.float16)
    eh[:, :dim] = np.eye(dim, dtype=np.float16)
    out["blk.2.nextn.eh_proj.weight"] = (eh, gguf.GGMLQuantizationType.F16)
    ones = np.ones(dim, dtype=np.float32)
    out["blk.2.nextn.enorm.weight"] = (ones, gguf.GGMLQuantizationType.F32)
    out["blk.2.nextn.hnorm.weight"] = (ones.copy(), gguf.GGMLQuantizationType.F32)
    out["blk.2.nextn.shared_head_norm.weight"] = out["output_norm.weight"]

    w = gguf.GGUFWriter(DST, arch="glm4moe")
    for f in r.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        value = f.contents()
        if f.name == gguf.Keys.General.NAME:
            value = "Glm4Moe Tiny MTP copy"
        w.add_key_value(f.name, value, vt, sub_type=sub)
    names = [t.name for t in r.tensors]
    for name in names:
        data, ty = out[name]
        w.add_tensor_info(name, data.shape, data.dtype, data.nbytes, ty)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name in names:
        w.write_tensor_data(out[name][0])
    w.close()
    print(DST, DST.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
