#!/usr/bin/env python3
"""Makes the fused-attn_kv_b test files: tiny DeepSeek-V3 and V2-Lite models as llama.cpp's
converter wrote them before it split `attn_kv_b` into `attn_k_b`/`attn_v_b` (April 2025).

From tests/data/tiny/<model>/<model>-Q4_K_M.gguf, per layer: `attn_k_b` (ne [qk_nope, kv_lora,
n_head], i.e. already transposed) and `attn_v_b` (ne [kv_lora, v_head, n_head]) are
dequantized and merged back into `attn_kv_b` (ne [kv_lora, n_head * (qk_nope + v_head)]:
per head qk_nope key rows then v_head value rows, as in HF's kv_b_proj), stored as F16.
The metadata gets the pre-split keys: `attention.head_count_kv` = n_head,
`attention.key_length` = qk_nope + qk_rope, `attention.value_length` = v_head, and no
`key_length_mla` / `value_length_mla`. Every other tensor and key is copied as it is.

Run with gguf-py installed (pip install ~/.cache/ferromoe/llama.cpp/src/gguf-py):
    python3 tests/data/fused/make.py
"""
import os

import numpy as np
import gguf
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["deepseek-v3-tiny", "deepseek-v2-lite-tiny"]
ARCH = "deepseek2"
DROP = {f"{ARCH}.attention.key_length_mla", f"{ARCH}.attention.value_length_mla"}


def field_value(reader, key):
    return reader.fields[key].contents()


def main():
    for model in MODELS:
        src = os.path.join(HERE, "..", "tiny", model, f"{model}-Q4_K_M.gguf")
        dst = os.path.join(HERE, f"{model}-fused-kv_b.gguf")
        r = gguf.GGUFReader(src)
        n_head = field_value(r, f"{ARCH}.attention.head_count")
        nope_rope = field_value(r, f"{ARCH}.attention.key_length_mla")
        v_head = field_value(r, f"{ARCH}.attention.value_length_mla")
        new = {
            f"{ARCH}.attention.head_count_kv": n_head,
            f"{ARCH}.attention.key_length": nope_rope,
            f"{ARCH}.attention.value_length": v_head,
        }
        w = gguf.GGUFWriter(dst, ARCH)
        for f in r.fields.values():
            if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF.") or f.name in DROP:
                continue
            vt = f.types[0]
            sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
            value = new.get(f.name, f.contents())
            w.add_key_value(f.name, value, vt, sub_type=sub)

        by_name = {t.name: t for t in r.tensors}
        out = []  # (name, numpy data, ggml type)
        for t in r.tensors:
            if t.name.endswith("attn_v_b.weight"):
                continue
            if t.name.endswith("attn_k_b.weight"):
                layer = t.name[: -len("attn_k_b.weight")]
                k_b = dequantize(t.data, t.tensor_type)  # numpy [n_head, kv_lora, nope]
                v = by_name[layer + "attn_v_b.weight"]
                v_b = dequantize(v.data, v.tensor_type)  # numpy [n_head, v_head, kv_lora]
                heads, lora, nope = k_b.shape
                k_rows = np.transpose(k_b, (0, 2, 1))  # [n_head, nope, kv_lora]
                kv_b = np.concatenate([k_rows, v_b], axis=1).reshape(heads * (nope + v_b.shape[1]), lora)
                out.append((layer + "attn_kv_b.weight", kv_b.astype(np.float16), gguf.GGMLQuantizationType.F16))
                continue
            out.append((t.name, t.data, t.tensor_type))
        for name, data, ty in out:
            # Quantized data is a byte array as gguf-py reads it; the writer derives the shape.
            w.add_tensor(name, data, raw_dtype=ty)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        print("wrote", dst, os.path.getsize(dst), "bytes")


if __name__ == "__main__":
    main()
