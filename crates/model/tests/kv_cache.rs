//! KV-cache sizes, and the contexts `KvCache::new` refuses with a message instead of an
//! aborted allocation (0 positions, a size that overflows, more than the machine has).

mod common;

use model::KvCache;

#[test]
fn sizes_and_refusals() {
    for (name, variant) in [("deepseek-v2-lite-tiny", "Q8_0"), ("qwen3moe-tiny", "Q8_0")] {
        let m = common::load(name, variant);
        let c = &m.config;
        let per = KvCache::bytes_for(c, 1).unwrap();
        // MLA caches the latent and the RoPE key; GQA keys and values of the KV heads.
        let want = match &c.mla {
            Some(mla) => c.n_layer * (mla.kv_lora_rank + mla.qk_rope) * 4,
            None => c.n_layer * c.n_head_kv * (c.head_dim + c.head_dim_v) * 4,
        };
        assert_eq!(per, want, "{name}");
        assert_eq!(KvCache::bytes_for(c, 10), Some(10 * per));
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
