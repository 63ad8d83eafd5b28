#!/usr/bin/env python3
"""Dequantization references for the low-bit types, made with gguf-py.

For each type in TYPES writes blocks-<TYPE>.gguf with two tensors:
  random  64 super-blocks of random valid bytes (ne = [1024, 16]): every bit pattern of these
          formats is valid except the f16 scale, drawn finite with magnitude 2^-14..2^2;
  real    the first 32 rows of the first tensor of that type in the deepseek-v3-tiny-*.gguf
          models here (quantized by llama-quantize, see quantize.sh),
and <TYPE>.random.npy / <TYPE>.real.npy: gguf-py's dequantization of each (float32, numpy order
= reversed ne). To add a type, add its name to TYPES (gguf-py must dequantize it).

Usage: tests/data/lowbit/make_blocks.py [GGUF_PY_DIR]
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GGUF_PY = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/ferromoe/llama.cpp/src/gguf-py")
sys.path.insert(0, GGUF_PY)
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T, quants  # noqa: E402

TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"]
REAL_ROWS = 32


def random_blocks(ty, n_blocks, rng):
    block_size, type_size = gguf.GGML_QUANT_SIZES[ty]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # Every i-quant here starts with its f16 scale `d`: make it finite, either sign.
    mag = np.exp2(rng.uniform(-14, 2, size=n_blocks)).astype(np.float16)
    sign = np.where(rng.integers(0, 2, size=n_blocks) == 1, -1, 1).astype(np.float16)
    raw[:, 0:2] = (mag * sign).view(np.uint8).reshape(n_blocks, 2)
    return raw, block_size


def real_tensor(ty):
    """The first tensor of type `ty` in the quantized tiny models here (file name, tensor)."""
    for f in sorted(os.listdir(HERE)):
        if f.startswith("deepseek-v3-tiny-") and f.endswith(".gguf"):
            for t in gguf.GGUFReader(os.path.join(HERE, f)).tensors:
                if t.tensor_type == ty:
                    return f, t
    raise SystemExit(f"no {ty.name} tensor in the models of {HERE}: run quantize.sh")


def main():
    rng = np.random.default_rng(14)
    for name in TYPES:
        ty = T[name]
        raw, bs = random_blocks(ty, 64, rng)
        ne0 = 1024
        random = raw.reshape(-1, ne0 // bs * raw.shape[1])  # 16 rows of 1024 values

        model_file, src = real_tensor(ty)
        data = np.asarray(src.data)
        rows = data.reshape(-1, data.shape[-1])[:REAL_ROWS]  # uint8 [rows, row_bytes]

        w = gguf.GGUFWriter(os.path.join(HERE, f"blocks-{name}.gguf"), arch="lowbit-test")
        w.add_string("lowbit.real_source", f"{model_file}:{src.name}")
        w.add_tensor("random", random, raw_dtype=ty)
        w.add_tensor("real", np.ascontiguousarray(rows), raw_dtype=ty)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        for tag, data in (("random", random), ("real", rows)):
            values = quants.dequantize(np.ascontiguousarray(data), ty).astype(np.float32)
            np.save(os.path.join(HERE, f"{name}.{tag}.npy"), values)
            print(name, tag, values.shape, "from", f"{model_file}:{src.name}" if tag == "real" else "rng")


if __name__ == "__main__":
    main()
