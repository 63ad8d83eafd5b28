//! The KV cache of one sequence.
//!
//! A sliding-window layer (gpt-oss: every other layer sees its last 128 positions) keeps
//! only a ring of [`ring_rows`] positions once the context is longer than twice that:
//! position `p` lives in slot `p mod rows`, written twice (slots `s` and `s + rows`) so
//! that any run of up to `rows` consecutive positions is one contiguous slice for the
//! attention kernel. The attention stage writes and attends in steps of at most
//! [`RING_STEP`] tokens, so a step never overwrites a position its own queries still
//! see. Going back ([`KvCache::truncate`]) works while the positions the new last
//! token's window needs are still in the ring, i.e. up to [`RING_STEP`] positions back;
//! further back the cache starts over (it says so by the length it keeps).

pub use kernels::kvdata::KvType;
use kernels::kvdata::{KvBuf, KvData};

use crate::config::Config;
use crate::ModelError;

/// The element types of a cache's keys and values (llama.cpp's `--cache-type-k` /
/// `--cache-type-v`). An MLA cache (latent + RoPE key per position) is all keys: it has
/// the key type, and the value type does not apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvTypes {
    pub k: KvType,
    pub v: KvType,
}

impl KvTypes {
    /// Both of one type.
    pub fn both(t: KvType) -> KvTypes {
        KvTypes { k: t, v: t }
    }

    /// The types a model of this configuration stores (an MLA cache: the key type only).
    pub fn describe(&self, config: &Config) -> String {
        match config.mla {
            Some(_) => format!("latent {}", self.k),
            None => format!("k {}, v {}", self.k, self.v),
        }
    }

    /// Checks that a model of this configuration can store its rows in these types:
    /// q8_0 needs heads of whole 32-value blocks.
    // `is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn check(&self, config: &Config) -> Result<(), ModelError> {
        let need = |ty: KvType, width: usize, what: &str, flag: &str| {
            if width % ty.block() == 0 {
                Ok(())
            } else {
                Err(ModelError::Input(format!(
                    "--cache-type-{flag} {ty}: this model's {what} are {width} values wide, \
                     not whole {}-value blocks; use f32, f16 or bf16",
                    ty.block()
                )))
            }
        };
        match &config.mla {
            Some(m) => {
                need(self.k, m.kv_lora_rank, "latent rows", "k")?;
                need(self.k, m.qk_rope, "RoPE keys", "k")
            }
            None => {
                need(self.k, config.head_dim, "key heads", "k")?;
                need(self.v, config.head_dim_v, "value heads", "v")
            }
        }
    }
}

/// Most new positions a sliding layer's ring takes in one attention step, and so how far
/// back a cache with rings can be truncated and continue: enough for the next turn of a
/// chat to reuse the conversation although the template drops the last answer's
/// reasoning (gpt-oss's harmony format does), and for `bench -d` with `-p 2048`. A ring of
/// 2 · (127 + 2048) rows (gpt-oss) is 17 MiB per sliding layer and sequence.
pub const RING_STEP: usize = 2048;

/// Positions the ring of a layer with this window holds: the window before the first
/// token of a step, and the step.
pub fn ring_rows(window: usize, step: usize) -> usize {
    window - 1 + step
}

/// Cached keys and values of one layer.
enum LayerCache {
    /// Grouped-query attention: `k` and `v` rows of `n_head_kv · head_dim` per position.
    Gqa { k: KvBuf, v: KvBuf },
    /// A sliding-window GQA layer's ring (see the module docs): `2 · rows` rows each.
    Ring { k: KvBuf, v: KvBuf, rows: usize },
    /// MLA (absorbed): per position the normalised latent `c_kv` (`kv_lora`) followed by
    /// the rotated shared key `k_pe` (`qk_rope`) — 576 values for DeepSeek-V3 instead of
    /// 2 · 128 heads · 128. With DeepSeek-V3.2's lightning indexer, also its key of each
    /// position (`index_keys`, f32, [`KvCache::index_width`] values per position; empty
    /// without an indexer): written with the latent, so that truncating the cache keeps
    /// both consistent.
    Mla { latent: KvBuf, index_keys: Vec<f32> },
}

/// Keys and values of every processed position of one sequence, for every layer.
pub struct KvCache {
    n_ctx: usize,
    types: KvTypes,
    len: usize,
    /// The first position every ring still holds (0 without rings).
    ring_from: usize,
    /// New positions a ring takes per attention step ([`RING_STEP`] but in tests).
    ring_step: usize,
    /// The smallest window of the ring layers (`None`: no rings).
    ring_window: Option<usize>,
    layers: Vec<LayerCache>,
    /// Bytes held, as [`KvCache::bytes_for`] computed them (the memory plan reserves
    /// with the same function).
    bytes: usize,
    /// The layers whose attention runs on a device keep their keys and values there,
    /// position by position (no rings): the backend's own cache, made on the first step
    /// (see [`crate::backend::Stream::start_attention`]). Going back needs nothing there:
    /// attention reads positions below [`KvCache::len`] only.
    device: Option<Box<dyn std::any::Any + Send>>,
}

impl KvCache {
    /// Values per position and layer of the keys (MLA: latent + RoPE key) and values.
    fn widths(config: &Config) -> (usize, usize) {
        match &config.mla {
            Some(m) => (m.kv_lora_rank + m.qk_rope, 0),
            None => (
                config.n_head_kv * config.head_dim,
                config.n_head_kv * config.head_dim_v,
            ),
        }
    }

    /// The ring of layer `il` in a cache of `n_ctx` positions: its rows, when the layer
    /// slides and the ring (stored twice) is smaller than the context.
    fn ring_of(config: &Config, il: usize, n_ctx: usize, step: usize) -> Option<usize> {
        let rows = ring_rows(config.window(il)?, step);
        (config.mla.is_none() && 2 * rows < n_ctx).then_some(rows)
    }

    /// Bytes a cache of `n_ctx` positions with keys and values of these types holds
    /// (`None` if the size overflows, or the rows are not whole blocks of the types).
    pub fn bytes_for(config: &Config, types: KvTypes, n_ctx: usize) -> Option<usize> {
        KvCache::bytes_with_step(config, types, n_ctx, RING_STEP)
    }

    /// Bytes per position of all layers, without sliding-window rings (what `--ctx`
    /// costs per position; the load line prints it).
    pub fn bytes_per_position(config: &Config, types: KvTypes) -> Option<usize> {
        let per_layer = KvCache::row_bytes(config, types)?;
        per_layer.checked_mul(config.n_layer)
    }

    /// Values per row of the per-row types (q8_KV's scale covers one): an MLA latent row
    /// whole, one key (value) head of the others.
    fn rows(config: &Config) -> (usize, usize) {
        match &config.mla {
            Some(m) => (m.kv_lora_rank + m.qk_rope, 0),
            None => (config.head_dim, config.head_dim_v),
        }
    }

    /// Values per position and layer of the lightning indexer's keys (f32; 0 without an
    /// indexer).
    pub fn index_width(config: &Config) -> usize {
        config
            .mla
            .as_ref()
            .and_then(|m| m.indexer.as_ref())
            .map_or(0, |ix| ix.head_dim)
    }

    /// Bytes of one position's keys and values in one layer.
    fn row_bytes(config: &Config, types: KvTypes) -> Option<usize> {
        let (k, v) = KvCache::widths(config);
        let (k_row, v_row) = KvCache::rows(config);
        let vb = if v == 0 { 0 } else { types.v.bytes(v, v_row)? };
        let ib = KvCache::index_width(config).checked_mul(size_of::<f32>())?;
        types.k.bytes(k, k_row)?.checked_add(vb)?.checked_add(ib)
    }

    fn bytes_with_step(
        config: &Config,
        types: KvTypes,
        n_ctx: usize,
        step: usize,
    ) -> Option<usize> {
        let mut positions = 0usize;
        for il in 0..config.n_layer {
            let rows = KvCache::ring_of(config, il, n_ctx, step).map_or(n_ctx, |r| 2 * r);
            positions = positions.checked_add(rows)?;
        }
        positions.checked_mul(KvCache::row_bytes(config, types)?)
    }

    /// Checks that `copies` caches of `n_ctx` positions can exist, and returns the bytes of
    /// one: at least one position, a size that does not overflow, and (where the OS says)
    /// no more bytes in all than the machine's RAM + swap. The errors say which and what to
    /// change.
    pub fn check_size(
        config: &Config,
        types: KvTypes,
        n_ctx: usize,
        copies: usize,
    ) -> Result<usize, ModelError> {
        types.check(config)?;
        let per_position = KvCache::bytes_for(config, types, 1).unwrap_or(usize::MAX);
        let per_layer = per_position / config.n_layer.max(1);
        if n_ctx == 0 {
            return Err(ModelError::Input(
                "the context must hold at least one position (--ctx 0)".into(),
            ));
        }
        let bytes = KvCache::bytes_for(config, types, n_ctx)
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

    /// An empty f32 cache for up to `n_ctx` positions, after [`KvCache::check_size`]. The
    /// memory is reserved up front (the OS supplies zeroed pages as positions are
    /// written), so an impossible size is an error that says so instead of an aborted
    /// allocation.
    pub fn new(config: &Config, n_ctx: usize) -> Result<KvCache, ModelError> {
        KvCache::with_types(config, KvTypes::default(), n_ctx)
    }

    /// [`KvCache::new`] with keys and values of these types.
    pub fn with_types(
        config: &Config,
        types: KvTypes,
        n_ctx: usize,
    ) -> Result<KvCache, ModelError> {
        KvCache::build(config, types, n_ctx, RING_STEP)
    }

    /// [`KvCache::new`] whose sliding layers' rings take `step` (≥ 1) new positions per
    /// attention step instead of [`RING_STEP`]: small rings that wrap within a short
    /// prompt, for tests.
    pub fn with_ring_step(
        config: &Config,
        n_ctx: usize,
        step: usize,
    ) -> Result<KvCache, ModelError> {
        KvCache::build(config, KvTypes::default(), n_ctx, step)
    }

    fn build(
        config: &Config,
        types: KvTypes,
        n_ctx: usize,
        step: usize,
    ) -> Result<KvCache, ModelError> {
        if step == 0 {
            return Err(ModelError::Input("a ring step of 0 positions".into()));
        }
        KvCache::check_size(config, types, n_ctx, 1)?;
        let bytes = KvCache::bytes_with_step(config, types, n_ctx, step).unwrap_or(usize::MAX);
        let (k_width, v_width) = KvCache::widths(config);
        let (k_row, v_row) = KvCache::rows(config);
        let layers = (0..config.n_layer)
            .map(
                |il| match (&config.mla, KvCache::ring_of(config, il, n_ctx, step)) {
                    (Some(_), _) => LayerCache::Mla {
                        latent: KvBuf::zeroed(types.k, n_ctx * k_width, k_row),
                        index_keys: vec![0.0; n_ctx * KvCache::index_width(config)],
                    },
                    (None, Some(rows)) => LayerCache::Ring {
                        k: KvBuf::zeroed(types.k, 2 * rows * k_width, k_row),
                        v: KvBuf::zeroed(types.v, 2 * rows * v_width, v_row),
                        rows,
                    },
                    (None, None) => LayerCache::Gqa {
                        k: KvBuf::zeroed(types.k, n_ctx * k_width, k_row),
                        v: KvBuf::zeroed(types.v, n_ctx * v_width, v_row),
                    },
                },
            )
            .collect();
        let ring_window = (0..config.n_layer)
            .filter(|&il| KvCache::ring_of(config, il, n_ctx, step).is_some())
            .filter_map(|il| config.window(il))
            .min();
        Ok(KvCache {
            n_ctx,
            types,
            len: 0,
            ring_from: 0,
            ring_step: step,
            ring_window,
            layers,
            bytes,
            device: None,
        })
    }

    /// The device part of this cache (see the field's docs), for the backend to make and
    /// downcast.
    pub(crate) fn device_part(&mut self) -> &mut Option<Box<dyn std::any::Any + Send>> {
        &mut self.device
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
    /// The keys' and values' element types.
    pub fn types(&self) -> KvTypes {
        self.types
    }
    /// Forgets positions from `len` on (e.g. `/clear`, or keeping a shared prefix) and
    /// returns the positions kept: `min(len, self.len())`, or 0 when a sliding layer's
    /// ring no longer holds the window the new last position needs (more than
    /// [`RING_STEP`] positions back): the sequence then starts over.
    /// [`KvCache::ring_step`] says how far back it can go.
    pub fn truncate(&mut self, len: usize) -> usize {
        let len = self.len.min(len);
        let lost = self
            .ring_window
            .is_some_and(|w| len > 0 && (len + 1).saturating_sub(w) < self.ring_from);
        self.len = if lost { 0 } else { len };
        if self.len == 0 {
            self.ring_from = 0;
        }
        self.len
    }
    /// Fills positions `len()..to` with copies of the positions held (repeated, every
    /// layer and index key alike), as if they had been processed: for benchmarks of
    /// decode and prompts after a deep context, whose cost depends on how many positions
    /// are cached, not on what they hold (`ferromoe bench --depth-fill copy`). Not for
    /// generating text: the copies' rotary positions are those of the originals. Caches
    /// with sliding-window rings, or with layers on a device, cannot be filled this way.
    pub fn repeat_prefix(&mut self, to: usize) -> Result<(), ModelError> {
        let len = self.len;
        if len == 0 || to > self.n_ctx {
            return Err(ModelError::Input(format!(
                "cannot fill a cache of {} positions to {to} from {len} held",
                self.n_ctx
            )));
        }
        if self.ring_window.is_some() || self.device.is_some() {
            return Err(ModelError::Input(
                "a cache with sliding-window rings or layers on a device cannot be filled by copies"
                    .into(),
            ));
        }
        for l in &mut self.layers {
            match l {
                LayerCache::Gqa { k, v } => {
                    for b in [k, v] {
                        let w = b.data().len() / self.n_ctx;
                        b.repeat_prefix(len * w, to * w);
                    }
                }
                LayerCache::Mla { latent, index_keys } => {
                    let w = latent.data().len() / self.n_ctx;
                    latent.repeat_prefix(len * w, to * w);
                    let w = index_keys.len() / self.n_ctx;
                    kernels::kvdata::repeat(index_keys, len * w, to * w);
                }
                LayerCache::Ring { .. } => unreachable!("no rings (checked above)"),
            }
        }
        self.set_len(to);
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Bytes of the buffers actually allocated, counted from them (tests check that this
    /// equals [`KvCache::bytes`], i.e. that the plan's formula is the allocation's).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                LayerCache::Gqa { k, v } | LayerCache::Ring { k, v, .. } => k.bytes() + v.bytes(),
                LayerCache::Mla { latent, index_keys } => {
                    latent.bytes() + index_keys.len() * size_of::<f32>()
                }
            })
            .sum()
    }
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
        // The rings now hold the last `rows` positions (and whatever older ones they held).
        let rows = self
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerCache::Ring { rows, .. } => Some(*rows),
                _ => None,
            })
            .min();
        if let Some(rows) = rows {
            self.ring_from = self.ring_from.max(len.saturating_sub(rows));
        }
    }

    /// New positions a sliding layer's ring takes per attention step, and so how far back
    /// [`KvCache::truncate`] can always go; `None` when the cache keeps every position.
    pub fn ring_step(&self) -> Option<usize> {
        self.ring_window.map(|_| self.ring_step)
    }

    /// The first position the sliding layers' rings still hold (0 without rings).
    pub fn ring_from(&self) -> usize {
        self.ring_from
    }

    /// Rows of layer `il`'s ring, `None` when the layer keeps every position.
    pub(crate) fn ring(&self, il: usize) -> Option<usize> {
        match &self.layers[il] {
            LayerCache::Ring { rows, .. } => Some(*rows),
            _ => None,
        }
    }

    /// GQA layer `il`: stores a position's key and value rows in slot `slot` (a ring's
    /// slot; otherwise the position).
    pub(crate) fn write_gqa(&mut self, il: usize, slot: usize, k_row: &[f32], v_row: &[f32]) {
        match &mut self.layers[il] {
            LayerCache::Gqa { k, v } | LayerCache::Ring { k, v, .. } => {
                k.write(slot * k_row.len(), k_row);
                v.write(slot * v_row.len(), v_row);
            }
            LayerCache::Mla { .. } => unreachable!("GQA access to an MLA cache"),
        }
    }

    /// GQA layer `il`: (keys, values), each `n_ctx` rows (a ring: `2 · rows`).
    pub(crate) fn gqa(&self, il: usize) -> (KvData<'_>, KvData<'_>) {
        match &self.layers[il] {
            LayerCache::Gqa { k, v } | LayerCache::Ring { k, v, .. } => (k.data(), v.data()),
            LayerCache::Mla { .. } => unreachable!("GQA access to an MLA cache"),
        }
    }

    /// MLA layer `il`: stores position `pos`'s latent + RoPE key row.
    pub(crate) fn write_mla(&mut self, il: usize, pos: usize, row: &[f32]) {
        match &mut self.layers[il] {
            LayerCache::Mla { latent, .. } => latent.write(pos * row.len(), row),
            LayerCache::Gqa { .. } | LayerCache::Ring { .. } => {
                unreachable!("MLA access to a GQA cache")
            }
        }
    }

    /// MLA layer `il`: the latent + RoPE key rows.
    pub(crate) fn mla(&self, il: usize) -> KvData<'_> {
        match &self.layers[il] {
            LayerCache::Mla { latent, .. } => latent.data(),
            LayerCache::Gqa { .. } | LayerCache::Ring { .. } => {
                unreachable!("MLA access to a GQA cache")
            }
        }
    }

    /// MLA layer `il` with a lightning indexer: stores position `pos`'s indexer key.
    pub(crate) fn write_index_key(&mut self, il: usize, pos: usize, key: &[f32]) {
        match &mut self.layers[il] {
            LayerCache::Mla { index_keys, .. } => {
                index_keys[pos * key.len()..(pos + 1) * key.len()].copy_from_slice(key)
            }
            LayerCache::Gqa { .. } | LayerCache::Ring { .. } => {
                unreachable!("indexer access to a GQA cache")
            }
        }
    }

    /// MLA layer `il`: the indexer keys of every position (`n_ctx` rows; empty without an
    /// indexer).
    pub(crate) fn index_keys(&self, il: usize) -> &[f32] {
        match &self.layers[il] {
            LayerCache::Mla { index_keys, .. } => index_keys,
            LayerCache::Gqa { .. } | LayerCache::Ring { .. } => {
                unreachable!("indexer access to a GQA cache")
            }
        }
    }
}
