//! The next-token-prediction (MTP) block's forward pass (DeepSeek-V3's and GLM-4.5's
//! `nextn` layer), for speculative drafts.
//!
//! Row `r` pairs the hidden state `h` of some position `p` with the token at `p + 1`:
//! `x = eh_proj · [enorm(embed(token)); hnorm(h)]`, then one block like a trunk layer
//! (attention over the block's own cache, then its FFN), and `head(head_norm(x))` predicts
//! the token at `p + 2`. `h` is the normalised output of the pass it comes from: the
//! trunk's final norm (`output_norm`), or, when the block chains on its own prediction,
//! its `head_norm` (as ik_llama.cpp, SGLang and Megatron-LM feed it; llama.cpp's graphs
//! name it `result_norm`). The block's cache positions are the positions `p` of the hidden
//! states: one per trunk position whose next token is known.

use kernels::norm::rms_norm;

use super::{cpu_block, BlockScratch, Logits, RunState};
use crate::kv::{KvCache, KvTypes};
use crate::stage::{buf, Batch, StageCtx};
use crate::{BatchLimits, BatchSeq, Model, ModelError};

/// The pass a hidden state given to the MTP block comes from, which decides the norm
/// that ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenFrom {
    /// The trunk's forward pass: normalised by `output_norm`.
    Trunk,
    /// The MTP block itself (a chained draft): normalised by its `head_norm`.
    Nextn,
}

impl RunState {
    /// The residual stream after the last block of this state's last pass, every row,
    /// before the final norm: `rows × dim` values (the trunk's, or the MTP block's after
    /// [`Model::forward_nextn`]).
    pub fn hidden(&self, dim: usize) -> &[f32] {
        &self.x[..self.rows.len() * dim]
    }

    /// The logits the last pass returned.
    pub fn logits(&self) -> &[f32] {
        &self.logits[..self.n_logits]
    }
}

impl Model {
    /// An empty cache for the MTP block: one layer, as the trunk's, for `n_ctx` positions.
    pub fn nextn_cache(&self, types: KvTypes, n_ctx: usize) -> Result<KvCache, ModelError> {
        self.nextn()?;
        KvCache::with_types(&self.nextn_cache_config(), types, n_ctx)
    }

    /// Sizes `st` for [`Self::forward_nextn`] passes of up to `max.tokens` rows, so that
    /// such passes allocate nothing.
    pub fn reserve_nextn(
        &self,
        st: &mut RunState,
        pool: &kernels::ThreadPool,
        max: BatchLimits,
    ) -> Result<(), ModelError> {
        let nx = self.nextn()?;
        st.reserve(self, pool, max)?;
        buf(&mut st.nextn_in, 2 * max.tokens * self.config.dim);
        st.linear.reserve(&nx.eh_proj, max.tokens)
    }

    /// Bytes of [`Self::nextn_cache`]'s cache (what a memory plan reserves for it);
    /// `None` when the size overflows.
    pub fn nextn_cache_bytes(&self, types: KvTypes, n_ctx: usize) -> Option<usize> {
        KvCache::bytes_for(&self.nextn_cache_config(), types, n_ctx)
    }

    /// The configuration the block's cache is shaped by: one full-attention layer.
    fn nextn_cache_config(&self) -> crate::Config {
        let mut c = self.config.clone();
        c.n_layer = 1;
        c.swa = None;
        c
    }

    /// Runs the MTP block over `tokens.len()` rows appended after what `kv` (from
    /// [`Model::nextn_cache`]) holds: row `r` pairs `hidden` row `r` (`dim` values, the
    /// pre-norm output of the pass `from` names) with the embedding of `tokens[r]`, the
    /// token after that hidden state's position. Returns the logits of the last row (the
    /// token after `tokens`' last); the block's pre-norm output of every row stays in `st`
    /// ([`RunState::hidden`]) for a chained draft.
    pub fn forward_nextn<'s>(
        &self,
        pool: &kernels::ThreadPool,
        st: &'s mut RunState,
        kv: &mut KvCache,
        hidden: &[f32],
        from: HiddenFrom,
        tokens: &[u32],
    ) -> Result<&'s [f32], ModelError> {
        let mut seqs = [BatchSeq {
            kv,
            tokens,
            logits: Logits::Last,
        }];
        self.forward_nextn_batch(pool, st, &mut seqs, hidden, from)
    }

    /// [`Self::forward_nextn`] for several sequences' block caches in one pass (the
    /// drafts of a server's sequences: the block's weights and the head are read once for
    /// all of them): `hidden` holds the rows of every sequence, in order, each paired with
    /// the token at the same place of its sequence's `tokens`. Returns one row of logits
    /// per sequence (its last row's; each sequence's `logits` must say `Last`). A row's
    /// result does not depend on the rest of the batch.
    pub fn forward_nextn_batch<'s>(
        &self,
        pool: &kernels::ThreadPool,
        st: &'s mut RunState,
        seqs: &mut [BatchSeq<'_>],
        hidden: &[f32],
        from: HiddenFrom,
    ) -> Result<&'s [f32], ModelError> {
        let nx = self.nextn()?;
        let (c, w) = (&self.config, &self.weights);
        let dim = c.dim;
        self.check_batch(seqs)?;
        if seqs.iter().any(|s| s.logits != Logits::Last) {
            return Err(ModelError::Input(
                "MTP: one row of logits per sequence (Logits::Last)".into(),
            ));
        }
        st.rows.clear();
        for (si, s) in seqs.iter().enumerate() {
            let start = s.kv.len();
            st.rows.extend((0..s.tokens.len()).map(|i| (si, start + i)));
        }
        let n = st.rows.len();
        if hidden.len() != n * dim {
            return Err(ModelError::Input(format!(
                "MTP: {} hidden values for {n} tokens of {dim}",
                hidden.len()
            )));
        }
        let limits = BatchLimits {
            tokens: n,
            seqs: seqs.len(),
            ctx: seqs.iter().map(|s| s.kv.n_ctx()).max().unwrap_or(0),
            logit_rows: 0,
        };
        st.reserve(self, pool, limits)?;
        st.linear.reserve(&nx.eh_proj, n)?;
        let nd = n * dim;
        for v in [&mut st.x, &mut st.xb, &mut st.stage_out] {
            buf(v, nd);
        }

        // [enorm(embed(token)); hnorm(h)] per row, then eh_proj.
        let joined = buf(&mut st.nextn_in, 2 * nd);
        let embed = nx.embed.as_ref().unwrap_or(&w.token_embd);
        let first_norm = match from {
            HiddenFrom::Trunk => &w.output_norm,
            HiddenFrom::Nextn => &nx.head_norm,
        };
        let tmp = &mut st.stage_out[..dim];
        let tokens = seqs.iter().flat_map(|s| s.tokens.iter());
        for ((row, &tok), h) in joined
            .chunks_exact_mut(2 * dim)
            .zip(tokens)
            .zip(hidden.chunks_exact(dim))
        {
            let (e_half, h_half) = row.split_at_mut(dim);
            quant::dequantize_row(embed.ty, embed.data(), tok as usize, tmp)?;
            rms_norm(tmp, &nx.enorm, c.rms_eps, e_half);
            rms_norm(h, first_norm, c.rms_eps, tmp);
            rms_norm(tmp, &nx.hnorm, c.rms_eps, h_half);
        }
        let x = &mut st.x[..nd];
        st.linear.forward(pool, &nx.eh_proj, 0, joined, x)?;

        let mut cx = StageCtx {
            config: c,
            pool,
            linear: &mut st.linear,
        };
        let mut batch = Batch {
            rows: &st.rows,
            seqs: &mut *seqs,
        };
        let scratch = BlockScratch {
            gqa: &mut st.gqa,
            mla: &mut st.mla,
            ffn: &mut st.ffn,
            moe: &mut st.moe,
        };
        let k = self.experts_per_token();
        let (xb, out) = (&mut st.xb[..nd], &mut st.stage_out[..nd]);
        // The block's own cache has one layer: 0.
        cpu_block(
            &mut cx, scratch, &nx.layer, k, &mut batch, 0, x, xb, out, None,
        )?;

        // Each sequence's last row through head_norm, then the head, one row each.
        let mut last = 0;
        for (i, s) in seqs.iter_mut().enumerate() {
            let len = s.kv.len() + s.tokens.len();
            s.kv.set_len(len);
            last += s.tokens.len();
            let x = &st.x[(last - 1) * dim..last * dim];
            rms_norm(
                x,
                &nx.head_norm,
                c.rms_eps,
                &mut st.xb[i * dim..(i + 1) * dim],
            );
        }
        let rows = seqs.len();
        let head = nx.head.as_ref().unwrap_or(&w.output);
        st.n_logits = rows * c.n_vocab;
        let logits = buf(&mut st.logits, rows * c.n_vocab);
        st.linear
            .forward(pool, head, 0, &st.xb[..rows * dim], logits)?;
        Ok(logits)
    }
}
