#!/usr/bin/env python3
"""Tiny random-weight GLM-4.5 (`glm4moe`) and MiniMax-M2 (`minimax-m2`) models and their
reference logits, for crates/model/tests/glm4moe_minimax_m2.rs (issue 19).

For each model, under tests/data/tiny/<model>/:
  config.json                      the HF config the weights were built from
  <model>-Q8_0.gguf, -Q4_K_M.gguf  llama.cpp's converter (F32) then llama-quantize
  ref/hf_logits_all_p{i}.npy       HF float32 eager logits of every position of prompt i
  ref/lcpp_{TYPE}_logits_all_p{i}.npy  llama.cpp's logits on the shipped file (lcpp_logits.c)
  ref/meta.json                    shapes, greedy continuations, routing margins, agreement

Every weight matrix is rounded to a Q8_0-representable value (blocks of 32 along its rows:
an f16 scale times int8) before HF runs, so the Q8_0 GGUF holds exactly the HF numbers
(checked here tensor by tensor against the F32 conversion): `--exact` on the Q8_0 file must
then match HF float32 to rounding. The routers stay F32 in every file.

The GLM model carries one next-token-prediction (MTP) block after its two trunk layers
(`num_nextn_predict_layers` 1, tensors `model.layers.2.*`, as the real checkpoints do), which HF
does not run and the converter stores as blk.2 with `nextn_predict_layers` = 1.

Needs: torch + transformers (PyPI; made with torch 2.15.0, transformers 5.24.0), numpy, the
llama.cpp source (converter, gguf-py) and build (llama-quantize, static libllama) under
~/.cache/ferromoe/llama.cpp (LLAMA_DIR). Usage: python3 tests/data/tiny/make_glm4moe_minimax_m2.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
LLAMA = Path(os.environ.get("LLAMA_DIR", Path.home() / ".cache/ferromoe/llama.cpp"))
sys.path.insert(0, str(LLAMA / "src/gguf-py"))
import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

PROMPTS = json.load(open(HERE / "tokenizer/prompts.json"))
N_GREEDY = 16


def q8_round(t: torch.Tensor) -> torch.Tensor:
    """The nearest Q8_0-representable tensor (blocks of 32 along the last dim)."""
    x = t.detach().double().reshape(-1, 32)
    amax = x.abs().amax(dim=1, keepdim=True)
    d = (amax / 127).float().half().double()
    q = torch.where(d > 0, (x / torch.where(d > 0, d, 1)).round().clamp(-127, 127), 0)
    return (q * d).float().reshape(t.shape)


def init_weights(model, seed: int, mtp_extra=None):
    """The tiny models' weight distributions (as /work/shared/testdata's), Q8_0-rounded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        buffers = [(n, b) for n, b in model.named_buffers() if "e_score_correction_bias" in n]
        for name, p in sorted(model.named_parameters()) + sorted(buffers):
            if "e_score_correction_bias" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 - 0.2)
            elif "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif "embed_tokens" in name:
                p.copy_(q8_round(torch.randn(p.shape, generator=g)))
            elif "lm_head" in name:
                p.copy_(q8_round(torch.randn(p.shape, generator=g) * 0.1))
            elif name.endswith("gate.weight"):  # routers: F32 in every file
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            elif p.ndim >= 2:
                p.copy_(q8_round(torch.randn(p.shape, generator=g) * 0.06))
            else:
                raise ValueError(f"no init rule for {name} {tuple(p.shape)}")
    return g


def hf_references(model, out: Path):
    meta = []
    with torch.no_grad():
        for i, ids in enumerate(PROMPTS):
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            np.save(out / f"hf_logits_all_p{i}.npy", logits)
            seq, greedy, margins = list(ids), [], []
            for _ in range(N_GREEDY):
                last = model(torch.tensor([seq])).logits[0, -1].float()
                top2 = torch.topk(last, 2).values
                margins.append(float(top2[0] - top2[1]))
                nxt = int(last.argmax())
                greedy.append(nxt)
                seq.append(nxt)
            meta.append({"index": i, "ids": ids, "greedy_ids": greedy, "greedy_top1_minus_top2_margin": margins})
    return meta


def convert(model_dir: Path, out: Path):
    """llama.cpp's converter, with the tiny tokenizer read as a GPT-2 BPE (its pre-tokenizer
    hash is unknown to llama.cpp; GLM's own vocab setup wants GLM's special tokens)."""
    wrapper = f"""
import sys
sys.path.insert(0, {str(LLAMA / 'src')!r}); sys.path.insert(0, {str(LLAMA / 'src/gguf-py')!r})
sys.argv = ["convert_hf_to_gguf.py", {str(model_dir)!r}, "--outtype", "f32", "--outfile", {str(out)!r}]
import convert_hf_to_gguf as c
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
from conversion.glm import Glm4MoeModel
Glm4MoeModel.set_vocab = TextModel._set_vocab_gpt2
c.main()
"""
    subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True)


def gguf_tensors(path: Path):
    r = gguf.GGUFReader(path)
    return {t.name: dequantize(t.data, t.tensor_type).reshape(-1) for t in r.tensors}, {
        t.name: t.tensor_type.name for t in r.tensors
    }


def lcpp_logits(exe: Path, gguf_path: Path, out: Path, prefix: str):
    for i, ids in enumerate(PROMPTS):
        raw = subprocess.run([str(exe), str(gguf_path), *map(str, ids)], check=True, capture_output=True).stdout
        np.save(out / f"{prefix}_logits_all_p{i}.npy", np.frombuffer(raw, dtype=np.float32).reshape(len(ids), -1))


def build_lcpp_logits(work: Path) -> Path:
    b = LLAMA / "build"
    exe = work / "lcpp_logits"
    subprocess.run(
        ["g++", "-O2", "-x", "c", str(HERE.parent / "lowbit/lcpp_logits.c"), "-x", "none", "-o", str(exe),
         f"-I{LLAMA / 'src/include'}", f"-I{LLAMA / 'src/ggml/include'}", str(b / "src/libllama.a"),
         str(b / "ggml/src/libggml.a"), str(b / "ggml/src/libggml-cpu.a"), str(b / "ggml/src/libggml-base.a"),
         "-fopenmp", "-lpthread", "-ldl", "-lm"], check=True)
    return exe


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def agreement(out: Path, a: str, b: str):
    agree = total = 0
    kls = []
    for i in range(len(PROMPTS)):
        x, y = np.load(out / f"{a}_logits_all_p{i}.npy"), np.load(out / f"{b}_logits_all_p{i}.npy")
        agree += int((x.argmax(-1) == y.argmax(-1)).sum())
        total += len(x)
        p, q = softmax(x.astype(np.float64)), softmax(y.astype(np.float64))
        kls += list((p * (np.log(p) - np.log(q))).sum(-1))
        maxdiff = float(np.abs(x - y).max())
    return {"top1_agree": agree, "positions": total, "kl_mean": float(np.mean(kls)), "kl_max": float(np.max(kls)),
            "max_abs_diff_last_prompt": maxdiff}


def glm4moe():
    from transformers import Glm4MoeConfig, Glm4MoeForCausalLM

    cfg = Glm4MoeConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        partial_rotary_factor=0.5, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                    "partial_rotary_factor": 0.5},
        attention_bias=True, use_qk_norm=True, n_routed_experts=8, num_experts_per_tok=3,
        n_shared_experts=1, routed_scaling_factor=2.5, n_group=4, topk_group=2, first_k_dense_replace=1,
        norm_topk_prob=True, rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False,
        num_nextn_predict_layers=1, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return "glm4moe-tiny", Glm4MoeForCausalLM, cfg, 1901


def minimax_m2():
    from transformers import MiniMaxM2Config, MiniMaxM2ForCausalLM

    cfg = MiniMaxM2Config(
        vocab_size=1000, hidden_size=256, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, rotary_dim=32,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "partial_rotary_factor": 0.5},
        num_local_experts=8, num_experts_per_tok=3, rms_norm_eps=1e-6, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return "minimax-m2-tiny", MiniMaxM2ForCausalLM, cfg, 1902


def add_mtp_block(model_dir: Path, model, g: torch.Generator):
    """GLM's MTP block as the real checkpoints store it: model.layers.{n_layer}.* (a full
    MoE decoder layer plus eh_proj, enorm, hnorm, shared_head.norm). HF does not run it."""
    from safetensors.torch import load_file, save_file

    files = sorted(model_dir.glob("*.safetensors"))
    assert len(files) == 1, files
    sd = load_file(files[0])
    n = model.config.num_hidden_layers
    last = f"model.layers.{n - 1}."
    with torch.no_grad():
        for k, v in list(sd.items()):
            if not k.startswith(last):
                continue
            name = f"model.layers.{n}." + k[len(last):]
            if "e_score_correction_bias" in k:
                sd[name] = torch.rand(v.shape, generator=g) * 0.4 - 0.2
            elif "norm" in k:
                sd[name] = torch.rand(v.shape, generator=g) + 0.5
            elif k.endswith("bias"):
                sd[name] = torch.randn(v.shape, generator=g) * 0.05
            elif k.endswith("gate.weight"):
                sd[name] = torch.randn(v.shape, generator=g) * 0.15
            else:
                sd[name] = q8_round(torch.randn(v.shape, generator=g) * 0.06)
        h = model.config.hidden_size
        sd[f"model.layers.{n}.eh_proj.weight"] = q8_round(torch.randn(h, 2 * h, generator=g) * 0.06)
        for norm in ["enorm", "hnorm", "shared_head.norm"]:
            sd[f"model.layers.{n}.{norm}.weight"] = torch.rand(h, generator=g) + 0.5
    save_file({k: v.contiguous() for k, v in sd.items()}, files[0], metadata={"format": "pt"})


def build(spec, work: Path, lcpp: Path):
    name, cls, cfg, seed = spec
    out_dir = HERE / name
    ref = out_dir / "ref"
    ref.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = cls._from_config(cfg, attn_implementation="eager").float().eval()
    g = init_weights(model, seed)
    hf_meta = hf_references(model, ref)

    model_dir = work / name
    model.save_pretrained(model_dir)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(HERE / "tokenizer" / f, model_dir / f)
    conf = json.load(open(model_dir / "config.json"))
    if name.startswith("minimax"):
        # The released checkpoints' keys the converter reads.
        conf["rotary_dim"] = 32
        conf["scoring_func"] = "sigmoid"
    json.dump(conf, open(model_dir / "config.json", "w"), indent=2)
    shutil.copy(model_dir / "config.json", out_dir / "config.json")
    if getattr(cfg, "num_nextn_predict_layers", 0):
        add_mtp_block(model_dir, model, g)

    f32 = work / f"{name}-F32.gguf"
    convert(model_dir, f32)
    files = {}
    for ty in ["Q8_0", "Q4_K_M"]:
        dst = out_dir / f"{name}-{ty}.gguf"
        subprocess.run([str(LLAMA / "build/bin/llama-quantize"), str(f32), str(dst), ty], check=True,
                       capture_output=True)
        files[ty] = dst

    # The Q8_0 file holds exactly the converted (= HF) numbers.
    full, _ = gguf_tensors(f32)
    q8, q8_types = gguf_tensors(files["Q8_0"])
    assert full.keys() == q8.keys()
    for k in full:
        assert np.array_equal(full[k].astype(np.float32), q8[k].astype(np.float32)), f"{name}: {k} differs in Q8_0"

    meta = {"hf_class": cls.__name__, "seed": seed, "versions": {"torch": torch.__version__,
            "transformers": __import__("transformers").__version__}, "prompts": hf_meta,
            "gguf": {}, "agreement": {}}
    for ty, path in files.items():
        lcpp_logits(lcpp, path, ref, f"lcpp_{ty}")
        _, types = gguf_tensors(path)
        meta["gguf"][ty] = {"bytes": path.stat().st_size, "tensor_types": types}
        meta["agreement"][f"lcpp_{ty}_vs_hf"] = agreement(ref, f"lcpp_{ty}", "hf")
    json.dump(meta, open(ref / "meta.json", "w"), indent=1)
    print(name, json.dumps(meta["agreement"]))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lcpp = build_lcpp_logits(work)
        for spec in [glm4moe(), minimax_m2()]:
            build(spec, work, lcpp)


if __name__ == "__main__":
    main()
