#!/usr/bin/env python3
"""Builds tests/data/quant/lowbit/: IQ1_S, IQ1_M, TQ1_0, TQ2_0 and MXFP4 test data decoded
by gguf-py (the reference), for the dequantizer and `ferromoe tensor` tests.

blocks.gguf holds per type:
  random.<type>  16 rows of random valid blocks (seeded; f16/E8M0 scales kept in range,
                 plus extremes), shape ne = [256, 16] (MXFP4: [32·8, 16]);
  real.<type>    the first 16 rows of a tensor that llama-quantize wrote in that type
                 (tiny DeepSeek-V3 BF16 → IQ1_S / IQ1_M with an importance matrix, TQ1_0,
                 TQ2_0, MXFP4_MOE), bytes copied unchanged.
<tensor name>.npy is gguf-py's dequantization (float32, numpy order = reversed ne).
mxfp4_src.npy / the tensor real.MXFP4 also serve the quantizer test: mxfp4_src.npy is the
f32 source rows (the BF16 weights) llama-quantize turned into real.MXFP4.

Usage: python3 scripts/gen/lowbit_b_testdata.py QUANT_DIR BF16_GGUF
  QUANT_DIR holds dsv3-{IQ1_S,IQ1_M,TQ1_0,TQ2_0,MXFP4_MOE}.gguf made by
    llama-imatrix -m BF16_GGUF -f <text> -o imatrix.gguf -c 128
    llama-quantize --imatrix imatrix.gguf BF16_GGUF dsv3-<T>.gguf <T>
  (llama.cpp from the llama-cpp-python 0.3.36 sdist; gguf-py from the same tree, found at
  ~/.cache/ferromoe/llama.cpp/src/gguf-py or $GGUF_PY).
"""
import json
import os
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", os.path.expanduser("~/.cache/ferromoe/llama.cpp/src/gguf-py")))
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

Q = gguf.GGMLQuantizationType
TYPES = {"IQ1_S": Q.IQ1_S, "IQ1_M": Q.IQ1_M, "TQ1_0": Q.TQ1_0, "TQ2_0": Q.TQ2_0, "MXFP4": Q.MXFP4}
FILES = {"IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "MXFP4": "MXFP4_MOE"}
ROWS = 16

quant_dir, bf16_path = sys.argv[1], sys.argv[2]
out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "quant", "lowbit")
os.makedirs(out_dir, exist_ok=True)
rng = np.random.default_rng(14)


def f16_bytes(n, extremes):
    d = rng.uniform(1e-3, 2.0, n) * rng.choice([-1, 1], n)
    if extremes:
        d[:6] = [65504.0, -65504.0, 5.96e-8, -1.2e-7, 0.0, 1.0]
    return d.astype(np.float16).view(np.uint8).reshape(n, 2)


def random_rows(name, qtype):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_per_row = 256
    nb = ROWS * n_per_row // block
    b = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    if name == "IQ1_S":
        b[:, 0:2] = f16_bytes(nb, True)
    elif name == "TQ1_0":
        b[:, 52:54] = f16_bytes(nb, True)
    elif name == "TQ2_0":
        b[:, 64:66] = f16_bytes(nb, True)
    elif name == "IQ1_M":
        d = f16_bytes(nb, True).view(np.uint16).reshape(nb)
        for k in range(4):
            nib = ((d >> (4 * k)) & 0xF).astype(np.uint8)
            b[:, 48 + 2 * k + 1] = (b[:, 48 + 2 * k + 1] & 0x0F) | (nib << 4)
    elif name == "MXFP4":
        b[:, 0] = rng.integers(100, 150, nb)
        b[:6, 0] = [0, 1, 2, 127, 200, 254]
    return b.reshape(ROWS, -1), [n_per_row, ROWS]


writer = gguf.GGUFWriter(os.path.join(out_dir, "blocks.gguf"), "ferromoe-lowbit-test")
manifest = {}
mxfp4_src = None
bf16 = gguf.GGUFReader(bf16_path)
for name, qtype in TYPES.items():
    rows, ne = random_rows(name, qtype)
    r = gguf.GGUFReader(os.path.join(quant_dir, f"dsv3-{FILES[name]}.gguf"))
    t = next(t for t in r.tensors if t.tensor_type == qtype)
    ne_real = [int(x) for x in t.shape]
    data = np.asarray(t.data).view(np.uint8).reshape(-1, gguf.quant_shape_to_byte_shape((ne_real[0],), qtype)[0])
    real = data[:ROWS].copy()
    if name == "MXFP4":
        src = next(s for s in bf16.tensors if s.name == t.name)
        vals = np.asarray(src.data).view(np.uint16).reshape(-1, ne_real[0])[:ROWS].astype(np.uint32) << 16
        mxfp4_src = vals.view(np.float32)
        np.save(os.path.join(out_dir, "mxfp4_src.npy"), mxfp4_src)
    for kind, raw, shape_ne, origin in [
        ("random", rows, ne, "random valid blocks, numpy seed 14"),
        ("real", real, [ne_real[0], ROWS], f"first {ROWS} rows of {t.name} in dsv3-{FILES[name]}.gguf"),
    ]:
        tname = f"{kind}.{name}"
        writer.add_tensor(tname, raw, raw_shape=raw.shape, raw_dtype=qtype)
        values = dequantize(raw, qtype).astype(np.float32)
        assert list(values.shape) == shape_ne[::-1], (tname, values.shape, shape_ne)
        np.save(os.path.join(out_dir, f"{tname}.npy"), values)
        manifest[tname] = {"type": name, "ne": shape_ne, "npy": f"{tname}.npy", "from": origin}
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
print("wrote", out_dir)
