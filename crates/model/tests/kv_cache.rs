//! KV-cache sizes, and the contexts `KvCache::new` refuses with a message instead of an
//! aborted allocation (0 positions, a size that overflows, more than the machine has).

mod common;

use model::{KvCache, KvType, KvTypes};

/// Bytes of `n` values of each type, in rows of `row` (q8_KV: a scale per row).
fn bytes(t: KvType, n: usize, row: usize) -> usize {
    match t {
        KvType::F32 => 4 * n,
        KvType::F16 | KvType::Bf16 => 2 * n,
        KvType::Q8_0 => n / 32 * 34,
        KvType::Q8Kv => n + 4 * (n / row),
    }
}

/// Every cache type: bytes per position as the type stores them (MLA: the key type only),
/// the plan's formula equal to the allocation.
#[test]
fn sizes_per_cache_type() {
    for (name, variant) in [("deepseek-v2-lite-tiny", "Q8_0"), ("qwen3moe-tiny", "Q8_0")] {
        let m = common::load(name, variant);
        let c = &m.config;
        for k in KvType::ALL {
            for v in KvType::ALL {
                let types = KvTypes { k, v };
                // Widths per position, and q8_KV's rows: an MLA row whole, a head otherwise.
                let (kw, vw, kr, vr) = match &c.mla {
                    Some(mla) => {
                        let w = mla.kv_lora_rank + mla.qk_rope;
                        (w, 0, w, 1)
                    }
                    None => (
                        c.n_head_kv * c.head_dim,
                        c.n_head_kv * c.head_dim_v,
                        c.head_dim,
                        c.head_dim_v,
                    ),
                };
                // These models' heads are whole q8_0 blocks: every type works.
                let kv = KvCache::with_types(c, types, 37);
                let kv = kv.unwrap();
                let want =
                    c.n_layer * (bytes(k, kw, kr) + if vw == 0 { 0 } else { bytes(v, vw, vr) });
                assert_eq!(
                    KvCache::bytes_per_position(c, types),
                    Some(want),
                    "{name} {k} {v}"
                );
                assert_eq!(KvCache::bytes_for(c, types, 37), Some(37 * want));
                assert_eq!((kv.bytes(), kv.allocated_bytes()), (37 * want, 37 * want));
                assert_eq!(kv.types(), types);
            }
        }
    }
}

/// q8_0 needs heads of whole 32-value blocks: a model whose heads are 40 wide is told so
/// (the keys' flag or the values', whichever is wrong), and f16 is fine.
#[test]
fn q8_0_refused_for_heads_that_are_not_whole_blocks() {
    let m = common::load("qwen2moe-tiny", "Q8_0");
    let mut c = m.config.clone();
    (c.head_dim, c.head_dim_v) = (40, 40);
    let q8 = KvType::Q8_0;
    let e = KvCache::with_types(
        &c,
        KvTypes {
            k: q8,
            v: KvType::F16,
        },
        8,
    )
    .err()
    .unwrap();
    let e = e.to_string();
    assert!(
        e.contains("--cache-type-k q8_0") && e.contains("40 values wide"),
        "{e}"
    );
    let e = KvCache::with_types(
        &c,
        KvTypes {
            k: KvType::F16,
            v: q8,
        },
        8,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("--cache-type-v q8_0"), "{e}");
    assert!(KvCache::with_types(&c, KvTypes::both(KvType::F16), 8).is_ok());
}

#[test]
fn sizes_and_refusals() {
    for (name, variant) in [("deepseek-v2-lite-tiny", "Q8_0"), ("qwen3moe-tiny", "Q8_0")] {
        let m = common::load(name, variant);
        let c = &m.config;
        let per = KvCache::bytes_for(c, KvTypes::default(), 1).unwrap();
        // MLA caches the latent and the RoPE key; GQA keys and values of the KV heads.
        let want = match &c.mla {
            Some(mla) => c.n_layer * (mla.kv_lora_rank + mla.qk_rope) * 4,
            None => c.n_layer * c.n_head_kv * (c.head_dim + c.head_dim_v) * 4,
        };
        assert_eq!(per, want, "{name}");
        assert_eq!(
            KvCache::bytes_for(c, KvTypes::default(), 10),
            Some(10 * per)
        );
        let kv = KvCache::new(c, 10).unwrap();
        assert_eq!((kv.n_ctx(), kv.len(), kv.bytes()), (10, 0, 10 * per));
        // The size the memory plan reserves (bytes_for) is what the buffers hold.
        assert_eq!(kv.allocated_bytes(), kv.bytes());
        assert_eq!(KvCache::new(c, 37).unwrap().allocated_bytes(), 37 * per);

        let e = KvCache::new(c, 0).err().unwrap().to_string();
        assert!(e.contains("at least one position"), "{e}");
        let e = KvCache::new(c, usize::MAX).err().unwrap().to_string();
        assert!(e.contains("overflows") && e.contains("--ctx"), "{e}");
        if model::sysmem::total_bytes().is_some() {
            let e = KvCache::new(c, (1usize << 50) / per)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("more than this machine's"), "{e}");
        }
    }
}
