//! The forward pass shared by every architecture: read it top to bottom in
//! [`Model::forward_batch`]. Each block is two stages (`crate::stage`): attention (GQA or
//! MLA) and FFN (dense or MoE), each reading the normalised hidden states and returning
//! its residual contribution. The activation buffers live in [`RunState`] (llama2.c's
//! `RunState`), one scratch struct per stage, sized once for the largest batch and
//! reused, so steady-state steps do not allocate.

use kernels::norm::rms_norm;
use kernels::vector::add_inplace;
use kernels::ThreadPool;

use crate::backend::{AfterAttention, DeviceAttention, DeviceFfn, MlaRule, Stream, StreamStats};
use crate::kv::KvCache;
use crate::linear::{Linear, MatmulMode};
use crate::stage::attention::{gqa_attention, GqaScratch};
use crate::stage::ffn::{dense_ffn, FfnScratch};
use crate::stage::mla::{mla_attention, MlaScratch};
use crate::stage::moe::{moe_ffn, MoeScratch};
use crate::stage::{buf, Batch, StageCtx};
use crate::weights::{Attention, Ffn, Layer};
use crate::{Model, ModelError};

mod nextn;

pub use crate::stage::mla::{mla_decompress_pays, MlaDims, MlaForm};
pub use crate::stage::moe::route;
pub use nextn::HiddenFrom;

/// The most tokens of one sequence a forward step may hold and still give, bit for bit,
/// the logits of that many one-token steps (speculative decoding verifies its drafts in
/// such steps; MLA runs them in the decode form, see `stage::mla`).
pub const VERIFY_STEP_MAX: usize = crate::stage::mla::ABSORBED_STEP_MAX;

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position of the batch.
    All,
}

/// One sequence's share of a batch: its cache, its new tokens and which logits it wants.
pub struct BatchSeq<'a> {
    pub kv: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// Every activation buffer of a forward pass (`n` = tokens in the batch): the residual
/// stream and the block buffers here, each stage's own in its scratch struct.
pub struct RunState {
    /// The matmul context (mode, activation scratch), shared by the stages.
    linear: Linear,
    /// (sequence, position) of each token row of the batch.
    rows: Vec<(usize, usize)>,
    /// Residual stream, `n × dim`.
    x: Vec<f32>,
    /// Normalised input of the current stage, `n × dim`.
    xb: Vec<f32>,
    /// Output of the current stage (its residual contribution), `n × dim`.
    stage_out: Vec<f32>,
    /// The stages' scratch.
    gqa: GqaScratch,
    mla: MlaScratch,
    ffn: FfnScratch,
    moe: MoeScratch,
    /// Output logits, `rows × n_vocab`.
    logits: Vec<f32>,
    /// Values of `logits` the last pass wrote.
    n_logits: usize,
    /// The MTP block's input rows, `n × 2·dim` (sized on its first pass).
    nextn_in: Vec<f32>,
    /// The stages' work on the device, when the model has weights there.
    device: Option<Box<dyn Stream>>,
    /// The largest batch the buffers are sized for.
    reserved: BatchLimits,
}

impl RunState {
    /// Empty buffers; `mode` chooses production or exact matmuls. The first forward
    /// pass (or [`RunState::reserve`]) sizes them.
    pub fn new(mode: MatmulMode) -> RunState {
        RunState {
            linear: Linear::new(mode),
            rows: Vec::new(),
            x: Vec::new(),
            xb: Vec::new(),
            stage_out: Vec::new(),
            gqa: GqaScratch::default(),
            mla: MlaScratch::default(),
            ffn: FfnScratch::default(),
            moe: MoeScratch::default(),
            logits: Vec::new(),
            n_logits: 0,
            nextn_in: Vec::new(),
            device: None,
            reserved: BatchLimits::default(),
        }
    }

    /// Attention over a q8_KV key cache in int8 (the quantized mode's default, where the CPU
    /// has AVX-512 VNNI) or in f32: for measuring what the int8 path changes.
    pub fn set_int8_attention(&mut self, on: bool) {
        self.linear.int8_attention = on;
    }

    /// Bus traffic and device waits of this state's steps so far (`None`: no device).
    pub fn device_stats(&self) -> Option<StreamStats> {
        self.device.as_ref().map(|d| d.stats())
    }

    /// The matmul mode.
    pub fn mode(&self) -> MatmulMode {
        self.linear.mode
    }

    /// Chooses how MLA attention runs (default [`MlaForm::Auto`]).
    pub fn set_mla_form(&mut self, form: MlaForm) {
        self.mla.form = form;
        // The forced decompressed form sizes its buffers differently: size again.
        self.reserved = BatchLimits::default();
    }

    /// Whether MLA attends only to the positions DeepSeek-V3.2's lightning indexer
    /// selects (the default); `false` runs dense MLA (the indexer still caches its keys).
    pub fn set_indexer_selection(&mut self, on: bool) {
        self.mla.ignore_selection = !on;
    }

    /// Sizes every buffer for batches within `max` of `model` on `pool` (a no-op when
    /// they are that large already), so that later steps do not allocate. The MLA
    /// decompressed form's per-position buffers grow with the longest prompt it serves
    /// instead (sized for the whole context they could take 256 MiB), unless that form
    /// is forced ([`RunState::set_mla_form`]).
    pub fn reserve(
        &mut self,
        model: &Model,
        pool: &ThreadPool,
        max: BatchLimits,
    ) -> Result<(), ModelError> {
        if let (None, Some(d)) = (&self.device, &model.device) {
            self.device = Some(d.backend.new_stream()?);
        }
        let r = self.reserved;
        if max.tokens <= r.tokens
            && max.seqs <= r.seqs
            && max.ctx <= r.ctx
            && max.logit_rows <= r.logit_rows
        {
            return Ok(());
        }
        let max = BatchLimits {
            tokens: max.tokens.max(r.tokens),
            seqs: max.seqs.max(r.seqs),
            ctx: max.ctx.max(r.ctx),
            logit_rows: max.logit_rows.max(r.logit_rows),
        };
        let (n, c, threads) = (max.tokens, &model.config, pool.n_threads());
        self.rows.reserve(n.saturating_sub(self.rows.len()));
        for v in [&mut self.x, &mut self.xb, &mut self.stage_out] {
            buf(v, n * c.dim);
        }
        // Logits of one row per sequence, or as many rows as asked for (more grow on
        // demand: all positions of a prompt).
        buf(&mut self.logits, max.seqs.max(max.logit_rows) * c.n_vocab);
        let w = &model.weights;
        for layer in w.layers.iter().chain(w.nextn.iter().map(|n| &n.layer)) {
            match &layer.attn {
                Attention::Gqa(_) => self.gqa.reserve(c, n, threads, max.ctx),
                Attention::Mla(a) => {
                    self.mla.reserve(c, max, threads);
                    // The forced decompressed form quantizes every cached latent.
                    if let Some(ctx) = self.mla.forced_decompress_ctx(c, max.ctx) {
                        self.linear.reserve(&a.k_b_t, ctx)?;
                    }
                }
            }
            match &layer.ffn {
                Ffn::Dense(f) => {
                    self.ffn.reserve(f.gate.n_out, n);
                    // The activations quantized for its matrices (`down`'s rows are
                    // the widest in most files).
                    for m in [&f.gate, &f.down] {
                        self.linear.reserve(m, n)?;
                    }
                }
                Ffn::Moe(f) => {
                    let k = model.experts_per_token();
                    self.moe.reserve(c, f, n, k, self.linear.mode)?
                }
            }
        }
        self.reserved = max;
        Ok(())
    }
}

/// The largest batch a [`RunState`] is sized for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchLimits {
    /// Tokens in one forward pass (all sequences together).
    pub tokens: usize,
    /// Sequences in one forward pass.
    pub seqs: usize,
    /// Context size of the longest cache (attention scores span it).
    pub ctx: usize,
    /// Logit rows of one pass, when more than one per sequence (0: one per sequence): a
    /// speculative step asks for every position of its draft.
    pub logit_rows: usize,
}

impl Model {
    /// Runs `tokens` (appended after what `kv` already holds) through the model and
    /// returns the logits of the last position (`[n_vocab]`) or of every position
    /// (`[tokens.len() × n_vocab]`).
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        st: &'s mut RunState,
        kv: &mut KvCache,
        tokens: &[u32],
        which: Logits,
    ) -> Result<&'s [f32], ModelError> {
        self.forward_batch(
            pool,
            st,
            &mut [BatchSeq {
                kv,
                tokens,
                logits: which,
            }],
        )
    }

    /// Runs several sequences' new tokens in one pass (prompt chunks and decode steps
    /// mixed): every matmul sees all tokens at once, attention reads each token's own
    /// sequence. Returns, sequence after sequence, one logit row (`Logits::Last`) or one
    /// per new token (`Logits::All`). A token's result does not depend on the rest of
    /// the batch.
    pub fn forward_batch<'s>(
        &self,
        pool: &ThreadPool,
        st: &'s mut RunState,
        seqs: &mut [BatchSeq<'_>],
    ) -> Result<&'s [f32], ModelError> {
        let c = &self.config;
        let w = &self.weights;
        self.check_batch(seqs)?;
        // Which sequence and position each row of the batch belongs to.
        st.rows.clear();
        for (si, s) in seqs.iter().enumerate() {
            st.rows
                .extend((0..s.tokens.len()).map(|i| (si, s.kv.len() + i)));
        }
        let n = st.rows.len();
        let ctx = seqs.iter().map(|s| s.kv.n_ctx()).max().unwrap_or(0);
        st.reserve(
            self,
            pool,
            BatchLimits {
                tokens: n,
                seqs: seqs.len(),
                ctx,
                logit_rows: 0,
            },
        )?;
        let nd = n * c.dim;
        // (Sized already unless this state served a wider model before.)
        for v in [&mut st.x, &mut st.xb, &mut st.stage_out] {
            buf(v, nd);
        }

        // Token embeddings: rows of token_embd, dequantized.
        let x = &mut st.x[..nd];
        for (t, &tok) in seqs.iter().flat_map(|s| s.tokens.iter()).enumerate() {
            let e = &w.token_embd;
            quant::dequantize_row(
                e.ty,
                e.data(),
                tok as usize,
                &mut x[t * c.dim..(t + 1) * c.dim],
            )?;
        }

        // The step's RoPE angles, once, when some layer's attention runs on the device.
        if let (Some(stream), true) = (st.device.as_deref_mut(), self.has_device_attention()) {
            let mla = MlaRule {
                form: st.mla.form,
                mode: st.linear.mode,
            };
            stream.begin_step(c, &st.rows, mla)?;
        }
        for (il, layer) in w.layers.iter().enumerate() {
            let mut cx = StageCtx {
                config: c,
                pool,
                linear: &mut st.linear,
            };
            let (x, xb, out) = (&mut st.x[..nd], &mut st.xb[..nd], &mut st.stage_out[..nd]);
            let mut batch = Batch {
                rows: &st.rows,
                seqs: &mut *seqs,
            };
            let device_ffn = self.device_ffn(il);

            // A layer whose attention runs on the device: x goes up once; the attention, its
            // residual add and the FFN norm (and the dense FFN, or the router's logits) run
            // there in one submission; x (with what the CPU's FFN needs) comes back once.
            if let (Some(stream), Some(a)) = (st.device.as_deref_mut(), self.device_attn(il)) {
                let after = match (&layer.ffn, device_ffn) {
                    (Ffn::Dense(_), Some(f)) => AfterAttention::Ffn(f),
                    (Ffn::Moe(_), _) if a.router().is_some() => AfterAttention::Router,
                    _ => AfterAttention::Norm,
                };
                stream.start_attention(c, il, a, x, &mut batch, after)?;
                match (&layer.ffn, after) {
                    (_, AfterAttention::Ffn(_)) => stream.finish_layer(x, None, None)?,
                    (Ffn::Dense(f), _) => {
                        stream.finish_layer(x, Some(xb), None)?;
                        dense_ffn(&mut cx, &mut st.ffn, f, xb, out)?;
                        add_inplace(x, out);
                    }
                    (Ffn::Moe(f), after) => {
                        let resident = matches!(after, AfterAttention::Router);
                        let n_expert = c.moe.as_ref().map_or(0, |m| m.n_expert);
                        let logits = resident.then(|| st.moe.router_logits(n, n_expert));
                        stream.finish_layer(x, Some(xb), logits)?;
                        let dev: Option<(&mut dyn Stream, &DeviceFfn)> = match device_ffn {
                            Some(f) => Some((stream, f)),
                            None => None,
                        };
                        let k = self.experts_per_token();
                        moe_ffn(&mut cx, &mut st.moe, f, k, xb, out, dev, resident)?;
                        add_inplace(x, out);
                    }
                }
                continue;
            }

            let on_device: Option<(&mut dyn Stream, &DeviceFfn)> =
                match (st.device.as_deref_mut(), device_ffn) {
                    (Some(stream), Some(f)) => Some((stream, f)),
                    _ => None,
                };
            let scratch = BlockScratch {
                gqa: &mut st.gqa,
                mla: &mut st.mla,
                ffn: &mut st.ffn,
                moe: &mut st.moe,
            };
            let k = self.experts_per_token();
            cpu_block(
                &mut cx, scratch, layer, k, &mut batch, il, x, xb, out, on_device,
            )?;
        }
        for s in seqs.iter_mut() {
            let len = s.kv.len() + s.tokens.len();
            s.kv.set_len(len);
        }

        // Final norm and the output projection, only for the rows asked for.
        let mut rows = 0;
        let mut first_row = 0;
        for s in seqs.iter() {
            let (from, count) = match s.logits {
                Logits::Last => (first_row + s.tokens.len() - 1, 1),
                Logits::All => (first_row, s.tokens.len()),
            };
            for r in from..from + count {
                rms_norm(
                    &st.x[r * c.dim..(r + 1) * c.dim],
                    &w.output_norm,
                    c.rms_eps,
                    &mut st.xb[rows * c.dim..(rows + 1) * c.dim],
                );
                rows += 1;
            }
            first_row += s.tokens.len();
        }
        st.n_logits = rows * c.n_vocab;
        let logits = buf(&mut st.logits, rows * c.n_vocab);
        let head = self.device.as_ref().and_then(|d| d.output.as_ref());
        match (st.device.as_deref_mut(), head) {
            (Some(stream), Some(head)) => {
                stream.start_matmul(head, &st.xb[..rows * c.dim])?;
                stream.finish(logits)?;
            }
            _ => st
                .linear
                .forward(pool, &w.output, 0, &st.xb[..rows * c.dim], logits)?,
        }
        Ok(logits)
    }

    /// Layer `il`'s attention on the device, if it runs there.
    fn device_attn(&self, il: usize) -> Option<&DeviceAttention> {
        self.device.as_ref()?.attn.get(il)?.as_ref()
    }

    /// Whether some layer's attention runs on the device.
    fn has_device_attention(&self) -> bool {
        self.device
            .as_ref()
            .is_some_and(|d| d.attn.iter().any(|a| a.is_some()))
    }

    /// Layer `il`'s FFN (dense or shared experts) on the device, if it runs there.
    fn device_ffn(&self, il: usize) -> Option<&DeviceFfn> {
        self.device.as_ref()?.ffn.get(il)?.as_ref()
    }

    /// Rejects an empty batch, a sequence without tokens or past its context, and
    /// tokens outside the vocabulary.
    fn check_batch(&self, seqs: &[BatchSeq<'_>]) -> Result<(), ModelError> {
        if seqs.is_empty() {
            return Err(ModelError::Input("forward: empty batch".into()));
        }
        for s in seqs {
            if s.tokens.is_empty() {
                return Err(ModelError::Input(
                    "forward: a sequence has no tokens".into(),
                ));
            }
            if s.kv.len() + s.tokens.len() > s.kv.n_ctx() {
                return Err(ModelError::Input(format!(
                    "context full: {} cached + {} new tokens exceed the context size {}",
                    s.kv.len(),
                    s.tokens.len(),
                    s.kv.n_ctx()
                )));
            }
            let n_vocab = self.config.n_vocab;
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ModelError::Input(format!(
                    "token id {bad} is outside the vocabulary (size {n_vocab})"
                )));
            }
        }
        Ok(())
    }
}

/// The stages' scratch a block borrows from its [`RunState`].
struct BlockScratch<'a> {
    gqa: &'a mut GqaScratch,
    mla: &'a mut MlaScratch,
    ffn: &'a mut FfnScratch,
    moe: &'a mut MoeScratch,
}

/// One block on the CPU, cache layer `il`: `x += attention(norm(x))`, then
/// `x += ffn(norm(x))` with `k` routed experts per token; the dense FFN or the shared
/// experts on the device when `on_device` holds them. `xb` and `out` are scratch rows.
#[allow(clippy::too_many_arguments)]
fn cpu_block(
    cx: &mut StageCtx,
    s: BlockScratch,
    layer: &Layer,
    k: usize,
    batch: &mut Batch,
    il: usize,
    x: &mut [f32],
    xb: &mut [f32],
    out: &mut [f32],
    on_device: Option<(&mut dyn Stream, &DeviceFfn)>,
) -> Result<(), ModelError> {
    let eps = cx.config.rms_eps;
    norm_rows(x, &layer.attn_norm, eps, xb);
    match &layer.attn {
        Attention::Gqa(a) => gqa_attention(cx, s.gqa, a, batch, il, xb, out)?,
        Attention::Mla(a) => mla_attention(cx, s.mla, a, batch, il, xb, out)?,
    }
    add_inplace(x, out);

    norm_rows(x, &layer.ffn_norm, eps, xb);
    match (&layer.ffn, on_device) {
        (Ffn::Dense(_), Some((stream, f))) => {
            stream.start_ffn(f, xb)?;
            stream.finish(out)?
        }
        (Ffn::Dense(f), None) => dense_ffn(cx, s.ffn, f, xb, out)?,
        (Ffn::Moe(f), dev) => moe_ffn(cx, s.moe, f, k, xb, out, dev, false)?,
    }
    add_inplace(x, out);
    Ok(())
}

/// RMSNorm of each `weight.len()`-wide row of `x` into `out`.
fn norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm(xr, weight, eps, or);
    }
}
