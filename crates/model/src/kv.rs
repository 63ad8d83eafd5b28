//! The KV cache of one sequence.

use crate::config::Config;
use crate::ModelError;

/// Cached keys and values of one layer.
enum LayerCache {
    /// Grouped-query attention: `k` and `v` rows of `n_head_kv · head_dim` per position.
    Gqa { k: Vec<f32>, v: Vec<f32> },
    /// MLA (absorbed): per position the normalised latent `c_kv` (`kv_lora`) followed by
    /// the rotated shared key `k_pe` (`qk_rope`) — 576 floats for DeepSeek-V3 instead of
    /// 2 · 128 heads · 128.
    Mla { latent: Vec<f32> },
}

/// Keys and values of every processed position of one sequence, for every layer.
pub struct KvCache {
    n_ctx: usize,
    len: usize,
    layers: Vec<LayerCache>,
    /// Bytes held, as [`KvCache::bytes_for`] computed them (the memory plan reserves
    /// with the same function).
    bytes: usize,
}

impl KvCache {
    /// Floats per position and layer of the keys (MLA: latent + RoPE key) and values.
    fn widths(config: &Config) -> (usize, usize) {
        match &config.mla {
            Some(m) => (m.kv_lora_rank + m.qk_rope, 0),
            None => (
                config.n_head_kv * config.head_dim,
                config.n_head_kv * config.head_dim_v,
            ),
        }
    }

    /// Bytes a cache of `n_ctx` positions holds (`None` if the size overflows).
    pub fn bytes_for(config: &Config, n_ctx: usize) -> Option<usize> {
        let (k, v) = KvCache::widths(config);
        config
            .n_layer
            .checked_mul(n_ctx)?
            .checked_mul(k + v)?
            .checked_mul(std::mem::size_of::<f32>())
    }

    /// Checks that `copies` caches of `n_ctx` positions can exist, and returns the bytes of
    /// one: at least one position, a size that does not overflow, and (where the OS says)
    /// no more bytes in all than the machine's RAM + swap. The errors say which and what to
    /// change.
    pub fn check_size(config: &Config, n_ctx: usize, copies: usize) -> Result<usize, ModelError> {
        let per_position = KvCache::bytes_for(config, 1).unwrap_or(usize::MAX);
        let per_layer = per_position / config.n_layer.max(1);
        if n_ctx == 0 {
            return Err(ModelError::Input(
                "the context must hold at least one position (--ctx 0)".into(),
            ));
        }
        let bytes = KvCache::bytes_for(config, n_ctx)
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| {
                ModelError::Input(format!(
                    "a context of {n_ctx} positions: its KV cache size overflows ({} layers × \
                     {per_layer} bytes per position and layer); use a smaller --ctx",
                    config.n_layer,
                ))
            })?;
        if let Some(have) = crate::sysmem::total_bytes() {
            let need = bytes as u128 * copies as u128;
            if need > have as u128 {
                let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
                let what = if copies == 1 {
                    format!("a context of {n_ctx} positions needs")
                } else {
                    format!("{copies} KV caches of {n_ctx} positions need")
                };
                return Err(ModelError::Input(format!(
                    "{what} {:.1} GiB of KV cache ({} layers × {per_layer} bytes per position \
                     and layer), more than this machine's {:.1} GiB of memory (RAM + swap); \
                     use a smaller --ctx",
                    gib(need),
                    config.n_layer,
                    gib(have as u128),
                )));
            }
        }
        Ok(bytes)
    }

    /// An empty cache for up to `n_ctx` positions, after [`KvCache::check_size`]. The
    /// memory is reserved up front (the OS supplies zeroed pages as positions are
    /// written), so an impossible size is an error that says so instead of an aborted
    /// allocation.
    pub fn new(config: &Config, n_ctx: usize) -> Result<KvCache, ModelError> {
        let bytes = KvCache::check_size(config, n_ctx, 1)?;
        let (k_width, v_width) = KvCache::widths(config);
        let layers = (0..config.n_layer)
            .map(|_| match config.mla {
                Some(_) => LayerCache::Mla {
                    latent: vec![0.0; n_ctx * k_width],
                },
                None => LayerCache::Gqa {
                    k: vec![0.0; n_ctx * k_width],
                    v: vec![0.0; n_ctx * v_width],
                },
            })
            .collect();
        Ok(KvCache {
            n_ctx,
            len: 0,
            layers,
            bytes,
        })
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    /// Forgets positions from `len` on (e.g. `/clear`, or keeping a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Bytes of the buffers actually allocated, counted from them (tests check that this
    /// equals [`KvCache::bytes`], i.e. that the plan's formula is the allocation's).
    pub fn allocated_bytes(&self) -> usize {
        let floats: usize = self
            .layers
            .iter()
            .map(|l| match l {
                LayerCache::Gqa { k, v } => k.len() + v.len(),
                LayerCache::Mla { latent } => latent.len(),
            })
            .sum();
        floats * std::mem::size_of::<f32>()
    }
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// GQA layer `il`: (keys, values), each `n_ctx` rows.
    pub(crate) fn gqa(&mut self, il: usize) -> (&mut [f32], &mut [f32]) {
        match &mut self.layers[il] {
            LayerCache::Gqa { k, v } => (k, v),
            LayerCache::Mla { .. } => unreachable!("GQA access to an MLA cache"),
        }
    }

    /// GQA layer `il`, read-only.
    pub(crate) fn gqa_ref(&self, il: usize) -> (&[f32], &[f32]) {
        match &self.layers[il] {
            LayerCache::Gqa { k, v } => (k, v),
            LayerCache::Mla { .. } => unreachable!("GQA access to an MLA cache"),
        }
    }

    /// MLA layer `il`, read-only.
    pub(crate) fn mla_ref(&self, il: usize) -> &[f32] {
        match &self.layers[il] {
            LayerCache::Mla { latent } => latent,
            LayerCache::Gqa { .. } => unreachable!("MLA access to a GQA cache"),
        }
    }

    /// MLA layer `il`: latent rows.
    pub(crate) fn mla(&mut self, il: usize) -> &mut [f32] {
        match &mut self.layers[il] {
            LayerCache::Mla { latent } => latent,
            LayerCache::Gqa { .. } => unreachable!("MLA access to a GQA cache"),
        }
    }
}
