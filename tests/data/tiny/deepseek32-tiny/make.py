#!/usr/bin/env python3
"""Tiny random-weight DeepSeek-V3.2 (`deepseek32`: MLA + the DSA lightning indexer) and its
reference logits, for crates/model/tests/deepseek32.rs (issue 19).

Under tests/data/tiny/deepseek32-tiny/:
  config.json                         the HF config the weights were built from
  deepseek32-tiny-{Q8_0,Q4_K_M}.gguf  llama.cpp's converter (F32, DeepseekV32ForCausalLM ->
                                      `deepseek32`) then llama-quantize
  ref/prompts.json                    the prompts: the three shared ones (1, 7, 33 tokens) and
                                      two more of 20 and 28 tokens (longer than index_topk = 8)
  ref/hf_logits_all_p{i}.npy          HF float32 eager logits of every position of prompt i
  ref/lcpp_{TYPE}_logits_all_p{i}.npy llama.cpp's logits on the shipped file (lcpp_logits.c)
  ref/meta.json                       greedy continuations, the indexer's selection margins,
                                      agreement numbers

The indexer selects index_topk = 8 positions per query, so every prompt longer than 8 tokens
attends sparsely from position 8 on; meta.json records, per layer and query, the gap between
the 8th and 9th index score relative to the row's largest (the selection is only a stable
reference if no gap is near f32 rounding; the smallest are ~1e-4, so quantized runs of two
engines can pick differently for a few queries).

Every weight matrix is rounded to a Q8_0-representable value (blocks of 32 along its rows:
an f16 scale times int8) before HF runs, so the Q8_0 GGUF holds exactly the HF numbers
(checked here tensor by tensor against the F32 conversion): `--exact` on the Q8_0 file must
then match HF float32 to rounding. The routers stay F32 in every file.

Needs: torch + transformers (PyPI; made with torch 2.15.0, transformers 5.25.0), numpy, the
llama.cpp source (converter, gguf-py) and build (llama-quantize, static libllama) under
~/.cache/ferromoe/llama.cpp (LLAMA_DIR). Usage: python3 tests/data/tiny/deepseek32-tiny/make.py
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
TINY = HERE.parent
LLAMA = Path(os.environ.get("LLAMA_DIR", Path.home() / ".cache/ferromoe/llama.cpp"))
sys.path.insert(0, str(LLAMA / "src/gguf-py"))
import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

NAME = "deepseek32-tiny"
SEED = 1932
TOPK = 8
N_GREEDY = 16
# The shared prompts, then two of our own longer than TOPK (ids of the tiny tokenizer).
PROMPTS = json.load(open(TINY / "tokenizer/prompts.json")) + [
    [51, 353, 612, 332, 962, 69, 92, 841, 40, 341, 50, 41, 55, 58, 488, 40, 355, 54, 857, 57],
    [708, 40, 341, 50, 41, 55, 58, 488, 40, 355, 54, 857, 57, 44, 39, 632, 395, 36, 54, 355,
     54, 834, 996, 769, 55, 880, 861, 559],
]


def q8_round(t: torch.Tensor) -> torch.Tensor:
    """The nearest Q8_0-representable tensor (blocks of 32 along the last dim)."""
    x = t.detach().double().reshape(-1, 32)
    amax = x.abs().amax(dim=1, keepdim=True)
    d = (amax / 127).float().half().double()
    q = torch.where(d > 0, (x / torch.where(d > 0, d, 1)).round().clamp(-127, 127), 0)
    return (q * d).float().reshape(t.shape)


def q8_both_ways(shape, g: torch.Generator) -> torch.Tensor:
    """kv_b_proj: the converter stores its key rows transposed (attn_k_b, rows of qk_nope),
    so they must be Q8_0-representable along both axes: multiples of d = 2^-10 (std ≈ 0.07)
    with a ±127·d in every 32-block of either direction (x[i, j] for i ≡ j mod 32), which
    makes d the block scale either way."""
    q = torch.randint(-126, 127, shape, generator=g).double()
    i, j = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
    q = torch.where(i % 32 == j % 32, 127 * sign, q)
    return (q * 2.0**-10).float()


def init_weights(model, seed: int):
    """The tiny models' weight distributions (as /work/shared/testdata's), Q8_0-rounded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        buffers = [(n, b) for n, b in model.named_buffers() if "e_score_correction_bias" in n]
        for name, p in sorted(model.named_parameters()) + sorted(buffers):
            if "e_score_correction_bias" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 - 0.2)
            elif name.endswith("k_norm.bias"):  # the indexer key's LayerNorm
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif "embed_tokens" in name:
                p.copy_(q8_round(torch.randn(p.shape, generator=g)))
            elif "lm_head" in name:
                p.copy_(q8_round(torch.randn(p.shape, generator=g) * 0.1))
            elif name.endswith("gate.weight"):  # routers: F32 in every file
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            elif name.endswith("kv_b_proj.weight"):
                p.copy_(q8_both_ways(p.shape, g))
            elif p.ndim >= 2:
                p.copy_(q8_round(torch.randn(p.shape, generator=g) * 0.06))
            else:
                raise ValueError(f"no init rule for {name} {tuple(p.shape)}")


def config():
    from transformers import DeepseekV32Config

    return DeepseekV32Config(
        vocab_size=1000, hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=256, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True,
        index_n_heads=8, index_head_dim=64, index_topk=TOPK,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "beta_fast": 32.0, "beta_slow": 1.0,
                         "mscale": 1.0, "mscale_all_dim": 1.0},
        max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )


def selection_margins(model):
    """Per layer and query (prompt-wide forward), the gap between the TOPK-th and the next
    index score relative to the row's largest |score|: recomputed from the indexer's inputs
    with HF's own formula."""
    from transformers.models.deepseek_v32 import modeling_deepseek_v32 as mod

    gaps = []

    def hook(ix, args, kwargs):
        hs, q_resid, (cos, sin), mask = args[0], args[1], args[2], args[3]
        b, s, _ = hs.shape
        q = ix.wq_b(q_resid).view(b, s, ix.n_heads, ix.head_dim)
        q_rot, q_pass = torch.split(q, [ix.qk_rope_head_dim, ix.head_dim - ix.qk_rope_head_dim], -1)
        k = ix.k_norm(ix.wk(hs)).unsqueeze(2)
        k_rot, k_pass = torch.split(k, [ix.qk_rope_head_dim, ix.head_dim - ix.qk_rope_head_dim], -1)
        q_rot, k_rot = mod.apply_rotary_pos_emb(q_rot, k_rot, cos, sin, unsqueeze_dim=2)
        q, k = torch.cat([q_rot, q_pass], -1), torch.cat([k_rot, k_pass], -1).squeeze(2)
        scores = torch.relu(torch.matmul(q, k.transpose(-1, -2).unsqueeze(1)) * ix.softmax_scale)
        w = ix.weights_proj(hs) * ix.n_heads**-0.5
        idx = torch.matmul(w.unsqueeze(-2), scores).squeeze(-2)[0]
        for t in range(TOPK, s):
            row = idx[t, : t + 1]
            top = torch.topk(row, TOPK + 1).values
            gaps.append(float((top[TOPK - 1] - top[TOPK]) / row.abs().max()))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules()
               if isinstance(m, mod.DeepseekV32Indexer)]
    return gaps, handles


def hf_references(model, out: Path):
    meta = []
    with torch.no_grad():
        for i, ids in enumerate(PROMPTS):
            gaps, handles = selection_margins(model)
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            for h in handles:
                h.remove()
            np.save(out / f"hf_logits_all_p{i}.npy", logits)
            seq, greedy, margins = list(ids), [], []
            for _ in range(N_GREEDY):
                last = model(torch.tensor([seq])).logits[0, -1].float()
                top2 = torch.topk(last, 2).values
                margins.append(float(top2[0] - top2[1]))
                nxt = int(last.argmax())
                greedy.append(nxt)
                seq.append(nxt)
            meta.append({"index": i, "ids": ids, "greedy_ids": greedy, "greedy_top1_minus_top2_margin": margins,
                         "min_relative_selection_gap": min(gaps) if gaps else None, "sparse_queries": len(gaps)})
    return meta


def convert(model_dir: Path, out: Path):
    """llama.cpp's converter (DeepseekV32Model), the tiny tokenizer read as a GPT-2 BPE (its
    pre-tokenizer hash is unknown to llama.cpp; V3.2's vocab setup wants add_bos)."""
    wrapper = f"""
import sys
sys.path.insert(0, {str(LLAMA / 'src')!r}); sys.path.insert(0, {str(LLAMA / 'src/gguf-py')!r})
sys.argv = ["convert_hf_to_gguf.py", {str(model_dir)!r}, "--outtype", "f32", "--outfile", {str(out)!r}]
import convert_hf_to_gguf as c
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
from conversion.deepseek import DeepseekV32Model
DeepseekV32Model.set_vocab = TextModel._set_vocab_gpt2
c.main()
"""
    subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True)


def gguf_tensors(path: Path):
    r = gguf.GGUFReader(path)
    return {t.name: dequantize(t.data, t.tensor_type).reshape(-1) for t in r.tensors}, {
        t.name: t.tensor_type.name for t in r.tensors
    }


def build_lcpp_logits(work: Path) -> Path:
    b = LLAMA / "build"
    exe = work / "lcpp_logits"
    subprocess.run(
        ["g++", "-O2", "-x", "c", str(TINY.parent / "lowbit/lcpp_logits.c"), "-x", "none", "-o", str(exe),
         f"-I{LLAMA / 'src/include'}", f"-I{LLAMA / 'src/ggml/include'}", str(b / "src/libllama.a"),
         str(b / "ggml/src/libggml.a"), str(b / "ggml/src/libggml-cpu.a"), str(b / "ggml/src/libggml-base.a"),
         "-fopenmp", "-lpthread", "-ldl", "-lm"], check=True)
    return exe


def lcpp_logits(exe: Path, gguf_path: Path, out: Path, prefix: str):
    for i, ids in enumerate(PROMPTS):
        raw = subprocess.run([str(exe), str(gguf_path), *map(str, ids)], check=True, capture_output=True).stdout
        np.save(out / f"{prefix}_logits_all_p{i}.npy", np.frombuffer(raw, dtype=np.float32).reshape(len(ids), -1))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def agreement(out: Path, a: str, b: str):
    agree = total = 0
    kls, maxdiff = [], 0.0
    for i in range(len(PROMPTS)):
        x, y = np.load(out / f"{a}_logits_all_p{i}.npy"), np.load(out / f"{b}_logits_all_p{i}.npy")
        agree += int((x.argmax(-1) == y.argmax(-1)).sum())
        total += len(x)
        p, q = softmax(x.astype(np.float64)), softmax(y.astype(np.float64))
        kls += list((p * (np.log(p) - np.log(q))).sum(-1))
        maxdiff = max(maxdiff, float(np.abs(x - y).max()))
    return {"top1_agree": agree, "positions": total, "kl_mean": float(np.mean(kls)), "kl_max": float(np.max(kls)),
            "max_abs_diff": maxdiff}


def main():
    from transformers import DeepseekV32ForCausalLM

    ref = HERE / "ref"
    ref.mkdir(parents=True, exist_ok=True)
    json.dump(PROMPTS, open(ref / "prompts.json", "w"))
    torch.manual_seed(SEED)
    model = DeepseekV32ForCausalLM._from_config(config(), attn_implementation="eager").float().eval()
    init_weights(model, SEED)
    hf_meta = hf_references(model, ref)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = work / NAME
        model.save_pretrained(model_dir)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(TINY / "tokenizer" / f, model_dir / f)
        conf = json.load(open(model_dir / "config.json"))
        conf["scoring_func"] = "sigmoid"  # as the released checkpoint's config says
        conf["topk_method"] = "noaux_tc"
        json.dump(conf, open(model_dir / "config.json", "w"), indent=2)
        shutil.copy(model_dir / "config.json", HERE / "config.json")

        f32 = work / f"{NAME}-F32.gguf"
        convert(model_dir, f32)
        files = {}
        for ty in ["Q8_0", "Q4_K_M"]:
            dst = HERE / f"{NAME}-{ty}.gguf"
            subprocess.run([str(LLAMA / "build/bin/llama-quantize"), str(f32), str(dst), ty], check=True,
                           capture_output=True)
            files[ty] = dst

        # The Q8_0 file holds exactly the converted (= HF) numbers.
        full, _ = gguf_tensors(f32)
        q8, _ = gguf_tensors(files["Q8_0"])
        assert full.keys() == q8.keys()
        for k in full:
            assert np.array_equal(full[k].astype(np.float32), q8[k].astype(np.float32)), f"{k} differs in Q8_0"

        meta = {"hf_class": "DeepseekV32ForCausalLM", "seed": SEED, "index_topk": TOPK,
                "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
                "prompts": hf_meta, "gguf": {}, "agreement": {}}
        lcpp = build_lcpp_logits(work)
        for ty, path in files.items():
            lcpp_logits(lcpp, path, ref, f"lcpp_{ty}")
            _, types = gguf_tensors(path)
            meta["gguf"][ty] = {"bytes": path.stat().st_size, "tensor_types": types}
            meta["agreement"][f"lcpp_{ty}_vs_hf"] = agreement(ref, f"lcpp_{ty}", "hf")
    json.dump(meta, open(ref / "meta.json", "w"), indent=1)
    print(NAME, json.dumps(meta["agreement"]), "min relative selection gaps",
          [p["min_relative_selection_gap"] for p in hf_meta])


if __name__ == "__main__":
    main()
