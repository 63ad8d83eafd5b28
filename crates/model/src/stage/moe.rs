//! The mixture-of-experts FFN: router, top-k routing, the routed experts, the shared
//! expert.
//!
//! Contract: `xb` (`n × dim`) in; `Σ_slot w(t, slot) · expert(t, slot)(xb[t]) +
//! gate(t) · shared(xb[t])` for each token `t` written to `out` (`n × dim`). The routed experts run in
//! `kernels::moe` in the quantized mode (every active expert over its routed tokens at
//! once) and expert by expert through [`crate::linear::Linear`] in the exact mode; the
//! weighted sums keep each token's result independent of the rest of its batch.

use kernels::activation::{glu_inplace, Glu};
use kernels::attention::dot;
use kernels::matmul::{MatmulError, QMatrix};
use kernels::moe::{moe_experts, ExpertBiases, ExpertGroups, ExpertStack, Experts, Routing};
use kernels::softmax::softmax_inplace;
use kernels::vector::{add_inplace, axpy};
use quant::GgmlType;

use super::ffn::{dense_ffn, FfnScratch};
use super::{buf, StageCtx};
use crate::backend::{DeviceFfn, Stream};
use crate::config::{Gating, MoeConfig};
use crate::linear::MatmulMode;
use crate::weights::{Matrix, MoeFfn};
use crate::{Config, ModelError};

/// The exact mode's routed-expert buffers: the grouping, one expert's input rows,
/// hidden rows and output rows.
#[derive(Default)]
struct OneByOneScratch {
    groups: ExpertGroups,
    expert_in: Vec<f32>,
    expert_gate: Vec<f32>,
    expert_up: Vec<f32>,
    expert_out: Vec<f32>,
}

/// An expert stack's slabs, for `kernels::moe` (the repacked copy when there is one).
impl ExpertStack for Matrix {
    fn ty(&self) -> GgmlType {
        self.ty
    }
    fn expert(&self, e: usize) -> Result<QMatrix<'_>, MatmulError> {
        self.qmatrix(e)
            .map_err(|err| MatmulError::Shape(err.to_string()))
    }
}

/// The MoE stage's buffers (`n` = tokens, `k` = experts per token).
#[derive(Default)]
pub struct MoeScratch {
    /// Router logits (then scores), `n × n_expert`; the chosen experts and their
    /// weights, `n × k`.
    router_logits: Vec<f32>,
    expert_ids: Vec<usize>,
    expert_weights: Vec<f32>,
    /// The fused routed experts (quantized mode).
    fused: kernels::moe::MoeScratch,
    /// The routed experts one by one (exact mode).
    one_by_one: OneByOneScratch,
    /// The shared expert's buffers and output, `n × dim`.
    shared: FfnScratch,
    shared_out: Vec<f32>,
}

impl MoeScratch {
    /// The router logits of `n` tokens over `n_expert` experts, for a device that
    /// computed them to write into (see [`moe_ffn`]'s `resident`).
    pub fn router_logits(&mut self, n: usize, n_expert: usize) -> &mut [f32] {
        buf(&mut self.router_logits, n * n_expert)
    }

    /// Sizes the buffers for `n` tokens routed to `k` experts each.
    pub fn reserve(
        &mut self,
        c: &Config,
        f: &MoeFfn,
        n: usize,
        k: usize,
        mode: MatmulMode,
    ) -> Result<(), ModelError> {
        let Some(mc) = &c.moe else { return Ok(()) };
        buf(&mut self.router_logits, n * mc.n_expert);
        buf(&mut self.expert_ids, n * k);
        buf(&mut self.expert_weights, n * k);
        match mode {
            MatmulMode::Quantized => self
                .fused
                .reserve(&experts(c, f), n, k)
                .map_err(|e| ModelError::Kernel(format!("MoE: {e}")))?,
            MatmulMode::Exact => {
                let s = &mut self.one_by_one;
                s.groups.reserve(mc.n_expert, n * k);
                buf(&mut s.expert_in, n * c.dim);
                buf(&mut s.expert_gate, n * mc.expert_ffn);
                buf(&mut s.expert_up, n * mc.expert_ffn);
                buf(&mut s.expert_out, n * c.dim);
            }
        }
        if let Some(shared) = &f.shared {
            self.shared.reserve(shared.gate.n_out, n);
            buf(&mut self.shared_out, n * c.dim);
        }
        Ok(())
    }
}

/// The routed experts of `f` as `kernels::moe` sees them.
fn experts<'w>(c: &Config, f: &'w MoeFfn) -> Experts<'w> {
    Experts {
        gate: &f.gate_exps,
        up: &f.up_exps,
        down: &f.down_exps,
        dim: c.dim,
        hidden: f.gate_exps.n_out,
        n_expert: f.gate_exps.n_slab,
        act: c.moe.as_ref().map_or(Glu::Silu, |m| m.act),
        bias: f.expert_bias.as_ref().map(|b| ExpertBiases {
            gate: &b.gate,
            up: &b.up,
            down: &b.down,
        }),
    }
}

/// The MoE FFN `f` of the rows of `xb`, `k` routed experts per token (see the module
/// contract). With `device`, the shared experts run there: started before the routing,
/// so that the device computes them while the CPU computes the routed experts, and
/// collected after. `resident`: the layer's attention ran on the device, which left the
/// router logits (without bias) in [`MoeScratch::router_logits`] and `xb` in its own
/// memory, where the shared experts read it.
#[allow(clippy::too_many_arguments)]
pub fn moe_ffn(
    cx: &mut StageCtx<'_>,
    s: &mut MoeScratch,
    f: &MoeFfn,
    k: usize,
    xb: &[f32],
    out: &mut [f32],
    device: Option<(&mut dyn Stream, &DeviceFfn)>,
    resident: bool,
) -> Result<(), ModelError> {
    let mut device = device;
    if let (Some((stream, shared)), Some(_)) = (device.as_mut(), &f.shared) {
        if resident {
            stream.start_resident_ffn(shared)?;
        } else {
            stream.start_ffn(shared, xb)?;
        }
    }
    let (c, pool) = (cx.config, cx.pool);
    let mc = c.moe.as_ref().ok_or_else(|| {
        ModelError::Kernel("MoE weights in a model without a MoE configuration".into())
    })?;
    let dim = c.dim;
    let n = xb.len() / dim;

    // Route every token.
    let logits = buf(&mut s.router_logits, n * mc.n_expert);
    if !resident {
        cx.linear.forward(pool, &f.router, 0, xb, logits)?;
    }
    if let Some(b) = &f.router_bias {
        logits
            .chunks_exact_mut(mc.n_expert)
            .for_each(|row| add_inplace(row, b));
    }
    let ids = buf(&mut s.expert_ids, n * k);
    let weights = buf(&mut s.expert_weights, n * k);
    for t in 0..n {
        route(
            mc,
            &mut logits[t * mc.n_expert..(t + 1) * mc.n_expert],
            f.selection_bias.as_deref(),
            &mut ids[t * k..(t + 1) * k],
            &mut weights[t * k..(t + 1) * k],
        );
    }
    let routing = Routing { ids, weights, k };

    match cx.linear.mode {
        MatmulMode::Quantized => {
            moe_experts(pool, &experts(c, f), xb, routing, &mut s.fused, out)
                .map_err(|e| ModelError::Kernel(format!("MoE: {e}")))?;
        }
        MatmulMode::Exact => {
            let w = experts(c, f);
            experts_one_by_one(cx, &mut s.one_by_one, f, &w, routing, xb, out)?
        }
    }
    shared_expert(cx, s, f, xb, out, device.map(|d| d.0))
}

/// The reference path: each expert runs once over all the tokens routed to it, through
/// [`crate::linear::Linear`], and adds its weighted output to `out` (experts ascending).
fn experts_one_by_one(
    cx: &mut StageCtx<'_>,
    s: &mut OneByOneScratch,
    f: &MoeFfn,
    w: &Experts<'_>,
    routing: Routing<'_>,
    xb: &[f32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let pool = cx.pool;
    let (dim, hidden) = (cx.config.dim, f.gate_exps.n_out);
    s.groups
        .group(routing.ids, routing.k, f.gate_exps.n_slab)
        .map_err(|e| ModelError::Kernel(format!("MoE: {e}")))?;
    out.fill(0.0);
    for &e in s.groups.active() {
        let tokens = s.groups.tokens(e);
        let m = tokens.len();
        let x_in = buf(&mut s.expert_in, m * dim);
        for (row, &t) in x_in.chunks_exact_mut(dim).zip(tokens) {
            let t = t as usize;
            row.copy_from_slice(&xb[t * dim..(t + 1) * dim]);
        }
        let gate = buf(&mut s.expert_gate, m * hidden);
        let up = buf(&mut s.expert_up, m * hidden);
        cx.linear.forward(pool, &f.gate_exps, e, x_in, gate)?;
        cx.linear.forward(pool, &f.up_exps, e, x_in, up)?;
        if let Some(b) = &w.bias {
            b.add_gate_up(e, hidden, gate, up);
        }
        glu_inplace(w.act, gate, up);
        let expert_out = buf(&mut s.expert_out, m * dim);
        cx.linear.forward(pool, &f.down_exps, e, gate, expert_out)?;
        if let Some(b) = &w.bias {
            b.add_down(e, dim, expert_out);
        }
        for (i, row) in s.groups.rows(e).enumerate() {
            let t = tokens[i] as usize;
            let wgt = routing.weights[s.groups.slot_of_row(row)];
            axpy(
                &mut out[t * dim..(t + 1) * dim],
                wgt,
                &expert_out[i * dim..(i + 1) * dim],
            );
        }
    }
    Ok(())
}

/// Adds the shared expert(s) to `out`, scaled by sigmoid(shared_gate · x) where the
/// architecture has that gate. `device`: they were started there; collect their output.
fn shared_expert(
    cx: &mut StageCtx<'_>,
    s: &mut MoeScratch,
    f: &MoeFfn,
    xb: &[f32],
    out: &mut [f32],
    device: Option<&mut dyn Stream>,
) -> Result<(), ModelError> {
    let Some(shared) = &f.shared else {
        return Ok(());
    };
    let dim = cx.config.dim;
    let shared_out = buf(&mut s.shared_out, xb.len());
    match device {
        Some(stream) => stream.finish(shared_out)?,
        None => dense_ffn(cx, &mut s.shared, shared, xb, shared_out)?,
    }
    for (t, (out_t, shared_t)) in out
        .chunks_exact_mut(dim)
        .zip(shared_out.chunks_exact(dim))
        .enumerate()
    {
        let scale = match &f.shared_gate {
            Some(g) => sigmoid(dot(g, &xb[t * dim..(t + 1) * dim])),
            None => 1.0,
        };
        axpy(out_t, scale, shared_t);
    }
    Ok(())
}

/// Most experts [`route`]'s group-limited selection handles (DeepSeek-V3 has 256).
const MAX_ROUTED_EXPERTS: usize = 1024;

/// Chooses `ids.len()` experts for one token from its router `logits` (overwritten
/// with the scores) and writes their combination weights. Allocation-free.
pub fn route(
    mc: &MoeConfig,
    logits: &mut [f32],
    selection_bias: Option<&[f32]>,
    ids: &mut [usize],
    weights: &mut [f32],
) {
    let n_expert = logits.len();
    match mc.gating {
        Gating::Softmax => softmax_inplace(logits),
        Gating::Sigmoid => logits.iter_mut().for_each(|x| *x = sigmoid(*x)),
    }
    let scores: &[f32] = logits;
    // Selection uses the biased scores (DeepSeek-V3); the weights use the plain ones.
    let choice = |e: usize| scores[e] + selection_bias.map_or(0.0, |b| b[e]);
    let mut allowed = [true; MAX_ROUTED_EXPERTS];
    let allowed = &mut allowed[..n_expert.min(MAX_ROUTED_EXPERTS)];
    if mc.n_group > 1 && mc.topk_group < mc.n_group && n_expert <= MAX_ROUTED_EXPERTS {
        // Group score = sum of the two best (biased) scores in the group.
        let per = n_expert / mc.n_group;
        let mut group_scores = [f32::NEG_INFINITY; MAX_ROUTED_EXPERTS];
        let group_scores = &mut group_scores[..mc.n_group];
        for (g, score) in group_scores.iter_mut().enumerate() {
            let mut best = [f32::NEG_INFINITY; 2];
            for e in g * per..(g + 1) * per {
                let s = choice(e);
                if s > best[0] {
                    best = [s, best[0]];
                } else if s > best[1] {
                    best[1] = s;
                }
            }
            *score = best[0] + if per > 1 { best[1] } else { 0.0 };
        }
        // The topk_group best groups (ties: the lower group), one after the other.
        allowed.fill(false);
        for _ in 0..mc.topk_group {
            let mut pick: Option<usize> = None;
            for (g, &sc) in group_scores.iter().enumerate() {
                let taken = allowed[g * per];
                if !taken && pick.is_none_or(|p| sc.total_cmp(&group_scores[p]).is_gt()) {
                    pick = Some(g);
                }
            }
            if let Some(g) = pick {
                allowed[g * per..(g + 1) * per].fill(true);
            }
        }
    }
    // Top-k by selection score; ties go to the lower expert id.
    let k = ids.len();
    let mut taken = 0;
    for e in 0..n_expert {
        if !allowed.get(e).copied().unwrap_or(true) {
            continue;
        }
        let s = choice(e);
        let mut i = taken.min(k);
        while i > 0 && choice(ids[i - 1]) < s {
            if i < k {
                ids[i] = ids[i - 1];
            }
            i -= 1;
        }
        if i < k {
            ids[i] = e;
        }
        taken += 1;
    }
    for (w, &e) in weights.iter_mut().zip(ids.iter()) {
        *w = scores[e];
    }
    if mc.norm_topk {
        let sum: f32 = weights.iter().sum();
        if sum > 0.0 {
            weights.iter_mut().for_each(|w| *w /= sum);
        }
    }
    weights.iter_mut().for_each(|w| *w *= mc.weights_scale);
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
