"""Makes the tiny random-weight gpt-oss model of this folder and its references.

Run `make.sh` beside this file (it calls this script, then llama.cpp's converter, quantizer and
logits program). This script:

1. builds a `GptOssForCausalLM` with transformers' own class: hidden 256, 2 layers (layer 0
   sliding-window attention with a window of 8 positions, layer 1 full attention), 4 query / 2 KV
   heads of 64, attention sinks, biases everywhere gpt-oss has them, 8 experts (FFN 128) of which
   2 per token, the clamped SwiGLU (alpha 1.702, limit 7), YaRN as the real models (factor 32,
   original context 4096, theta 150000, beta 32/1, truncate false), the tiny shared tokenizer
   (vocabulary 1000);
2. rounds the weights so that the quantized GGUF `make.sh` writes holds exactly these numbers: the
   expert matrices are MXFP4 values (per block of 32 inputs one power-of-two scale times E2M1
   codes), every other matrix is Q8_0 values (per block of 32 an fp16 scale times integers, one of
   them ±127); vectors (norms, biases, sinks) and the router stay f32;
3. tries a few seeds and keeps the one whose routing has the widest margin between the last chosen
   and the first unchosen expert logit (so that small numeric differences cannot flip a choice);
4. saves the model (safetensors, f32) under `hf/` for the converter, and HF's float32 logits
   (eager attention) for every position of the three shared prompts as `ref/hf_logits_all_p{i}.npy`.

Usage: python3 make.py OUT_HF_DIR REF_DIR
"""

import json
import os
import sys

import numpy as np
import torch
from transformers import GptOssConfig, GptOssForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = json.load(open(os.path.join(HERE, "..", "tokenizer", "prompts.json")))

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)


def config() -> GptOssConfig:
    return GptOssConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 150000.0,
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 4096,
        },
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        attention_bias=True,
    )


def q8_0_exact(x: np.ndarray) -> np.ndarray:
    """Values Q8_0 reproduces exactly: per block of 32 along the last axis, an fp16 scale d
    and integers q in [-127, 127], the largest |q| being 127 (so llama.cpp's d = amax/127 is d)."""
    shape = x.shape
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(axis=1, keepdims=True)
    d = (amax / 127.0).astype(np.float16).astype(np.float32)
    d[d == 0] = np.float32(2.0**-14)
    q = np.clip(np.round(b / d), -127, 127)
    # The block's largest value becomes exactly ±127·d.
    i = np.abs(b).argmax(axis=1)
    rows = np.arange(b.shape[0])
    q[rows, i] = np.where(b[rows, i] < 0, -127, 127)
    return (q * d).astype(np.float32).reshape(shape)


def mxfp4_exact(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """`n_blocks` blocks of 32 MXFP4 values: random signed E2M1 codes times 2^k, k in {-7, -6}."""
    codes = E2M1[rng.integers(0, 8, size=(n_blocks, 32))]
    signs = np.where(rng.random((n_blocks, 32)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = np.exp2(rng.integers(-7, -5, size=(n_blocks, 1))).astype(np.float32)
    return (codes * signs * scale).astype(np.float32)


def build(seed: int) -> GptOssForCausalLM:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = config()
    cfg._attn_implementation = "eager"
    model = GptOssForCausalLM(cfg).eval()
    sd = model.state_dict()
    new = {}
    for name, t in sd.items():
        shape = tuple(t.shape)
        if name.endswith("experts.gate_up_proj"):
            # [E, hidden, 2·inter]: blocks run along hidden (the GGUF rows).
            e, h, o = shape
            v = mxfp4_exact(rng, e * o * h // 32).reshape(e, o, h).transpose(0, 2, 1)
        elif name.endswith("experts.down_proj"):
            # [E, inter, hidden]: blocks run along inter.
            e, i, h = shape
            v = mxfp4_exact(rng, e * h * i // 32).reshape(e, h, i).transpose(0, 2, 1)
        elif name.endswith("_bias") or name.endswith(".bias"):
            v = rng.normal(0, 0.05, size=shape)
        elif name.endswith("sinks"):
            v = rng.normal(0, 1.0, size=shape)
        elif "norm" in name:
            v = rng.uniform(0.5, 1.5, size=shape)
        elif name.endswith("router.weight"):
            v = rng.normal(0, 0.15, size=shape)
        elif name.endswith("embed_tokens.weight"):
            v = q8_0_exact(rng.normal(0, 1.0, size=shape))
        elif name == "lm_head.weight":
            v = q8_0_exact(rng.normal(0, 0.1, size=shape))
        elif name.endswith("proj.weight"):
            v = q8_0_exact(rng.normal(0, 0.06, size=shape))
        else:
            raise SystemExit(f"unexpected tensor {name} {shape}")
        new[name] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    model.load_state_dict(new)
    return model


def routing_margin(model: GptOssForCausalLM) -> float:
    """Smallest gap between the k-th and (k+1)-th router logit over every token of every prompt."""
    k = model.config.num_experts_per_tok
    margins = []

    def hook(_module, _inp, out):
        logits = out[0]
        top = torch.topk(logits, k + 1, dim=-1).values
        margins.append(float((top[:, k - 1] - top[:, k]).min()))

    handles = [layer.mlp.router.register_forward_hook(hook) for layer in model.model.layers]
    with torch.no_grad():
        for ids in PROMPTS:
            model(torch.tensor([ids]))
    for h in handles:
        h.remove()
    return min(margins)


def main():
    out_hf, ref_dir = sys.argv[1], sys.argv[2]
    best = None
    for seed in range(19000, 19016):
        model = build(seed)
        m = routing_margin(model)
        if best is None or m > best[1]:
            best = (seed, m)
    seed, margin = best
    print(f"seed {seed}: smallest routing margin {margin:.4f}")
    model = build(seed)
    os.makedirs(out_hf, exist_ok=True)
    model.save_pretrained(out_hf, safe_serialization=True)
    cfg = json.load(open(os.path.join(out_hf, "config.json")))
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out_hf, "config.json"), "w"), indent=2)
    os.makedirs(ref_dir, exist_ok=True)
    with torch.no_grad():
        for i, ids in enumerate(PROMPTS):
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            np.save(os.path.join(ref_dir, f"hf_logits_all_p{i}.npy"), logits)
            print(f"p{i}: {len(ids)} tokens, last top-1 {int(logits[-1].argmax())}")
    json.dump(
        {"seed": seed, "min_routing_margin": margin, "torch": torch.__version__},
        open(os.path.join(ref_dir, "hf_seed.json"), "w"),
        indent=2,
    )


if __name__ == "__main__":
    main()
