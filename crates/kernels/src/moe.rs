//! Routed experts of a mixture-of-experts FFN, the production way: tokens grouped by
//! expert ([`ExpertGroups`]), the input quantized once, every active expert's gate and up
//! products as one parallel region, SiLU·mul, one quantization of all hidden rows, the
//! down products as a second region, then each token's weighted sum in slot order
//! ([`moe_experts`]).
//!
//! The grouping is also what a reference path (one expert at a time, dequantized weights)
//! iterates over, so both paths see the same tokens per expert in the same order.

use std::ops::Range;

use quant::GgmlType;

use crate::activation::{glu_inplace, Glu};
use crate::matmul::{quantize_acts, ActScratch, MatmulError, MatmulOp, OpBatch, QMatrix};
use crate::matmul::{QuantizedActs, MAX_BATCH_OPS};
use crate::vector::axpy;
use crate::ThreadPool;

/// A stack of expert matrices (`ffn_{gate,up,down}_exps`): expert `e` is one slab.
/// Implemented by whatever owns the weights (the model's `Matrix`, a test's bytes).
pub trait ExpertStack {
    /// The weight type (every slab has the same).
    fn ty(&self) -> GgmlType;
    /// The kernels' view of expert `e`'s matrix (no copy).
    fn expert(&self, e: usize) -> Result<QMatrix<'_>, MatmulError>;
}

/// One MoE layer's routed experts and their shapes.
pub struct Experts<'w> {
    /// `dim` → `hidden`, per expert.
    pub gate: &'w dyn ExpertStack,
    pub up: &'w dyn ExpertStack,
    /// `hidden` → `dim`, per expert.
    pub down: &'w dyn ExpertStack,
    /// Residual stream width (input and output values per token).
    pub dim: usize,
    /// Hidden width of one expert.
    pub hidden: usize,
    /// Experts in the stacks.
    pub n_expert: usize,
    /// How gate and up combine (SwiGLU, or gpt-oss's clamped variant).
    pub act: Glu,
    /// Per-expert biases of the three products (gpt-oss), `None` for none.
    pub bias: Option<ExpertBiases<'w>>,
}

/// Biases added to each expert's products: `gate`/`up` are `n_expert × hidden` (added
/// before the activation), `down` is `n_expert × dim` (added before the routing weight).
#[derive(Clone, Copy, Debug)]
pub struct ExpertBiases<'w> {
    pub gate: &'w [f32],
    pub up: &'w [f32],
    pub down: &'w [f32],
}

impl ExpertBiases<'_> {
    /// Checks the lengths against the stacks' shapes.
    pub fn check(&self, n_expert: usize, hidden: usize, dim: usize) -> Result<(), MatmulError> {
        if self.gate.len() != n_expert * hidden
            || self.up.len() != n_expert * hidden
            || self.down.len() != n_expert * dim
        {
            return Err(MatmulError::Shape(format!(
                "MoE: expert biases of {}/{}/{} values for {n_expert} experts of {hidden} → {dim}",
                self.gate.len(),
                self.up.len(),
                self.down.len()
            )));
        }
        Ok(())
    }

    /// Adds expert `e`'s gate and up biases to its `rows` hidden rows.
    pub fn add_gate_up(&self, e: usize, hidden: usize, gate: &mut [f32], up: &mut [f32]) {
        let (gb, ub) = (
            &self.gate[e * hidden..(e + 1) * hidden],
            &self.up[e * hidden..(e + 1) * hidden],
        );
        gate.chunks_exact_mut(hidden)
            .for_each(|r| crate::vector::add_inplace(r, gb));
        up.chunks_exact_mut(hidden)
            .for_each(|r| crate::vector::add_inplace(r, ub));
    }

    /// Adds expert `e`'s down bias to its output rows.
    pub fn add_down(&self, e: usize, dim: usize, out: &mut [f32]) {
        let db = &self.down[e * dim..(e + 1) * dim];
        out.chunks_exact_mut(dim)
            .for_each(|r| crate::vector::add_inplace(r, db));
    }
}

/// The router's choice for `n` tokens: `ids[t·k + slot]` is the expert of the token's
/// slot and `weights[t·k + slot]` its combination weight.
#[derive(Clone, Copy, Debug)]
pub struct Routing<'a> {
    pub ids: &'a [usize],
    pub weights: &'a [f32],
    /// Experts per token.
    pub k: usize,
}

/// The routed (token, slot) pairs of a batch grouped by expert: rows `rows(e)` are
/// expert `e`'s, in token order. Sized for the largest batch seen; regrouping a batch no
/// larger does not allocate.
#[derive(Default, Debug)]
pub struct ExpertGroups {
    /// `offsets[e]..offsets[e + 1]` are expert `e`'s rows.
    offsets: Vec<usize>,
    /// The token of each row.
    tokens: Vec<u32>,
    /// The (token, slot) index of each row, and the row of each (token, slot).
    slot_of_row: Vec<u32>,
    row_of_slot: Vec<u32>,
    /// Next free row of each expert while grouping.
    cursor: Vec<usize>,
    /// Experts with at least one row, ascending (the first `n_active`).
    active: Vec<usize>,
    n_active: usize,
    /// Rows grouped (tokens × k) and experts of the last grouping.
    n_rows: usize,
    n_expert: usize,
    /// `0, 1, 2, ...`: the hidden row of each row (the down products' inputs).
    identity: Vec<u32>,
}

/// Grows `v` to `n` values (filled with `fill`); never shrinks.
fn grow<T: Clone>(v: &mut Vec<T>, n: usize, fill: T) {
    if v.len() < n {
        v.resize(n, fill);
    }
}

impl ExpertGroups {
    /// Empty groups.
    pub fn new() -> ExpertGroups {
        ExpertGroups::default()
    }

    /// Makes room for `n_rows` (token, slot) pairs over `n_expert` experts.
    pub fn reserve(&mut self, n_expert: usize, n_rows: usize) {
        grow(&mut self.offsets, n_expert + 1, 0);
        grow(&mut self.cursor, n_expert, 0);
        grow(&mut self.active, n_expert, 0);
        grow(&mut self.tokens, n_rows, 0);
        grow(&mut self.slot_of_row, n_rows, 0);
        grow(&mut self.row_of_slot, n_rows, 0);
        if self.identity.len() < n_rows {
            self.identity.reserve(n_rows - self.identity.len());
            while self.identity.len() < n_rows {
                self.identity.push(self.identity.len() as u32);
            }
        }
    }

    /// Groups `ids` (`k` experts per token, token-major) by expert. An id outside
    /// `0..n_expert` is an error.
    pub fn group(&mut self, ids: &[usize], k: usize, n_expert: usize) -> Result<(), MatmulError> {
        if k == 0 || ids.len() % k != 0 {
            return Err(MatmulError::Shape(format!(
                "MoE: {} routed ids are not whole tokens of {k} experts",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&e| e >= n_expert) {
            return Err(MatmulError::Shape(format!(
                "MoE: expert {bad} out of range ({n_expert} experts)"
            )));
        }
        let nk = ids.len();
        self.reserve(n_expert, nk);
        let offsets = &mut self.offsets[..n_expert + 1];
        offsets.fill(0);
        for &e in ids {
            offsets[e + 1] += 1;
        }
        self.n_active = 0;
        for e in 0..n_expert {
            if offsets[e + 1] > 0 {
                self.active[self.n_active] = e;
                self.n_active += 1;
            }
            offsets[e + 1] += offsets[e];
        }
        self.cursor[..n_expert].copy_from_slice(&offsets[..n_expert]);
        for (i, &e) in ids.iter().enumerate() {
            let row = self.cursor[e];
            self.cursor[e] += 1;
            self.tokens[row] = (i / k) as u32;
            self.slot_of_row[row] = i as u32;
            self.row_of_slot[i] = row as u32;
        }
        self.n_rows = nk;
        self.n_expert = n_expert;
        Ok(())
    }

    /// Rows grouped, `tokens × k`.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Experts with at least one routed token, ascending.
    pub fn active(&self) -> &[usize] {
        &self.active[..self.n_active]
    }

    /// Expert `e`'s rows (empty for an expert outside the last grouping).
    pub fn rows(&self, e: usize) -> Range<usize> {
        match (self.offsets.get(e), self.offsets.get(e + 1)) {
            (Some(&a), Some(&b)) if e < self.n_expert => a..b,
            _ => 0..0,
        }
    }

    /// The token of each of expert `e`'s rows, ascending.
    pub fn tokens(&self, e: usize) -> &[u32] {
        &self.tokens[self.rows(e)]
    }

    /// The (token, slot) index (into the routing's `ids`/`weights`) of row `row`.
    pub fn slot_of_row(&self, row: usize) -> usize {
        self.slot_of_row[row] as usize
    }

    /// The row of (token, slot) index `i`.
    pub fn row_of_slot(&self, i: usize) -> usize {
        self.row_of_slot[i] as usize
    }
}

/// Scratch memory of [`moe_experts`]: the grouping, the quantized inputs and hidden
/// rows, and the per-row gate, up and output values. Sized by [`MoeScratch::reserve`];
/// a larger batch grows it (allocates) once.
#[derive(Default, Debug)]
pub struct MoeScratch {
    pub groups: ExpertGroups,
    act_in: ActScratch,
    act_hidden: ActScratch,
    /// `rows × hidden`: gate, then silu(gate)·up in place.
    gate: Vec<f32>,
    up: Vec<f32>,
    /// `rows × dim`: each row's expert output, before weighting.
    row_out: Vec<f32>,
}

impl MoeScratch {
    /// Empty scratch.
    pub fn new() -> MoeScratch {
        MoeScratch::default()
    }

    /// Makes room for `n_tokens` tokens routed to `k` experts each.
    pub fn reserve(
        &mut self,
        w: &Experts<'_>,
        n_tokens: usize,
        k: usize,
    ) -> Result<(), MatmulError> {
        let rows = n_tokens * k;
        self.groups.reserve(w.n_expert, rows);
        self.act_in.reserve(w.gate.ty(), w.dim, n_tokens)?;
        self.act_hidden.reserve(w.down.ty(), w.hidden, rows)?;
        grow(&mut self.gate, rows * w.hidden, 0.0);
        grow(&mut self.up, rows * w.hidden, 0.0);
        grow(&mut self.row_out, rows * w.dim, 0.0);
        Ok(())
    }
}

/// `out[t] = Σ_slot weight(t, slot) · down_e(silu(gate_e · x[t]) · (up_e · x[t]))` with
/// `e = ids[t·k + slot]` (with [`Experts::act`]'s activation and [`Experts::bias`]'s biases
/// where set), for the `n = x.len() / dim` tokens of `x`; `out` is overwritten.
/// Each product is the one [`crate::matmul::matmul_acts`] computes, and the sum runs in
/// slot order, so a token's result does not depend on the rest of the batch.
pub fn moe_experts(
    pool: &ThreadPool,
    w: &Experts<'_>,
    x: &[f32],
    routing: Routing<'_>,
    s: &mut MoeScratch,
    out: &mut [f32],
) -> Result<(), MatmulError> {
    let (dim, hidden, k) = (w.dim, w.hidden, routing.k);
    if dim == 0 || x.len() % dim != 0 || out.len() != x.len() {
        return Err(MatmulError::Shape(format!(
            "MoE: {} input and {} output values are not rows of {dim}",
            x.len(),
            out.len()
        )));
    }
    let n = x.len() / dim;
    if routing.ids.len() != n * k || routing.weights.len() != n * k {
        return Err(MatmulError::Shape(format!(
            "MoE: {n} tokens × {k} experts need as many ids and weights, got {} and {}",
            routing.ids.len(),
            routing.weights.len()
        )));
    }
    if quant::dot::act_type_for(w.gate.ty()) != quant::dot::act_type_for(w.up.ty()) {
        return Err(MatmulError::Shape(format!(
            "MoE: {} and {} experts need different activation types",
            w.gate.ty(),
            w.up.ty()
        )));
    }
    if let Some(b) = &w.bias {
        b.check(w.n_expert, hidden, dim)?;
    }
    s.reserve(w, n, k)?;
    s.groups.group(routing.ids, k, w.n_expert)?;
    let nk = n * k;
    let MoeScratch {
        groups,
        act_in,
        act_hidden,
        gate,
        up,
        row_out,
    } = s;
    let (gate, up) = (&mut gate[..nk * hidden], &mut up[..nk * hidden]);

    // Gate and up: each expert reads only its routed tokens of the input.
    let xq = quantize_acts(pool, w.gate.ty(), x, dim, act_in)?;
    for chunk in groups.active().chunks(MAX_BATCH_OPS / 2) {
        let mut batch = OpBatch::new();
        let span = groups.rows(chunk[0]).start..groups.rows(chunk[chunk.len() - 1]).end;
        let mut gate_rest = &mut gate[span.start * hidden..span.end * hidden];
        let mut up_rest = &mut up[span.start * hidden..span.end * hidden];
        for &e in chunk {
            // Active experts' rows are contiguous and ascending: peel them off in order.
            let len = groups.rows(e).len() * hidden;
            let (g_here, g_next) = { gate_rest }.split_at_mut(len);
            let (u_here, u_next) = { up_rest }.split_at_mut(len);
            gate_rest = g_next;
            up_rest = u_next;
            batch.push(op(w.gate.expert(e)?, xq, groups.tokens(e), g_here))?;
            batch.push(op(w.up.expert(e)?, xq, groups.tokens(e), u_here))?;
        }
        batch.run(pool)?;
    }
    if let Some(b) = &w.bias {
        for &e in groups.active() {
            let rows = groups.rows(e);
            let span = rows.start * hidden..rows.end * hidden;
            b.add_gate_up(e, hidden, &mut gate[span.clone()], &mut up[span]);
        }
    }
    glu_inplace(w.act, gate, up);

    // Down, from one quantization of every hidden row.
    let hq = quantize_acts(pool, w.down.ty(), gate, hidden, act_hidden)?;
    let row_out = &mut row_out[..nk * dim];
    for chunk in groups.active().chunks(MAX_BATCH_OPS) {
        let mut batch = OpBatch::new();
        let span = groups.rows(chunk[0]).start..groups.rows(chunk[chunk.len() - 1]).end;
        let mut rest = &mut row_out[span.start * dim..span.end * dim];
        for &e in chunk {
            let rows = groups.rows(e);
            let (here, next) = { rest }.split_at_mut(rows.len() * dim);
            rest = next;
            batch.push(op(w.down.expert(e)?, hq, &groups.identity[rows], here))?;
        }
        batch.run(pool)?;
    }

    if let Some(b) = &w.bias {
        for &e in groups.active() {
            let rows = groups.rows(e);
            b.add_down(e, dim, &mut row_out[rows.start * dim..rows.end * dim]);
        }
    }

    // Weighted sum per token, in slot order.
    out.fill(0.0);
    for (t, out_t) in out.chunks_exact_mut(dim).enumerate() {
        for i in t * k..(t + 1) * k {
            let row = groups.row_of_slot(i);
            axpy(
                out_t,
                routing.weights[i],
                &row_out[row * dim..(row + 1) * dim],
            );
        }
    }
    Ok(())
}

fn op<'a>(
    w: QMatrix<'a>,
    xq: QuantizedActs<'a>,
    tokens: &'a [u32],
    out: &'a mut [f32],
) -> MatmulOp<'a> {
    MatmulOp {
        w,
        xq,
        tokens: Some(tokens),
        out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::matmul_acts;
    use rand::{Rng, SeedableRng};
    type Rng64 = rand::rngs::StdRng;

    /// A test's expert stack: `n_expert` quantized slabs in one buffer.
    struct Stack {
        ty: GgmlType,
        n_in: usize,
        n_out: usize,
        bytes: Vec<u8>,
    }

    impl Stack {
        fn random(
            ty: GgmlType,
            n_in: usize,
            n_out: usize,
            n_expert: usize,
            rng: &mut Rng64,
        ) -> Stack {
            let vals: Vec<f32> = (0..n_in * n_out * n_expert)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut bytes =
                vec![0u8; ty.row_bytes((n_in * n_out * n_expert) as u64).unwrap() as usize];
            quant::quantize(ty, &vals, &mut bytes).unwrap();
            Stack {
                ty,
                n_in,
                n_out,
                bytes,
            }
        }
    }

    impl ExpertStack for Stack {
        fn ty(&self) -> GgmlType {
            self.ty
        }
        fn expert(&self, e: usize) -> Result<QMatrix<'_>, MatmulError> {
            let slab = self.ty.row_bytes(self.n_in as u64).unwrap() as usize * self.n_out;
            let data = self
                .bytes
                .get(e * slab..(e + 1) * slab)
                .ok_or_else(|| MatmulError::Shape(format!("no expert {e}")))?;
            QMatrix::new(self.ty, self.n_in, self.n_out, data)
        }
    }

    #[test]
    fn groups_are_by_expert_in_token_order() {
        let mut g = ExpertGroups::new();
        // 4 tokens, k = 2, 5 experts (expert 3 unused).
        let ids = [2, 0, 0, 4, 2, 1, 4, 0];
        g.group(&ids, 2, 5).unwrap();
        assert_eq!(g.n_rows(), 8);
        assert_eq!(g.active(), &[0, 1, 2, 4]);
        assert_eq!(g.tokens(0), &[0, 1, 3]);
        assert_eq!(g.tokens(1), &[2]);
        assert_eq!(g.tokens(2), &[0, 2]);
        assert!(g.tokens(3).is_empty());
        assert_eq!(g.tokens(4), &[1, 3]);
        for (i, &e) in ids.iter().enumerate() {
            let row = g.row_of_slot(i);
            assert!(g.rows(e).contains(&row));
            assert_eq!(g.slot_of_row(row), i);
        }
        // Regrouping a smaller batch forgets the old one.
        g.group(&[3, 1], 2, 5).unwrap();
        assert_eq!(g.active(), &[1, 3]);
        assert!(g.tokens(0).is_empty());
        assert!(g.group(&[5, 0], 2, 5).is_err(), "expert out of range");
        assert!(g.group(&[1, 0, 2], 2, 5).is_err(), "not whole tokens");
    }

    /// The fused path equals the plain one (each expert's products one by one with
    /// [`matmul_acts`], the weighted sum in slot order), bit for bit: SwiGLU without biases,
    /// and gpt-oss's clamped SwiGLU with per-expert biases.
    #[test]
    fn fused_experts_match_one_by_one() {
        let mut rng = Rng64::seed_from_u64(21);
        let pool = ThreadPool::new(2);
        let (dim, hidden, n_expert, k, n) = (256, 256, 6, 2, 5);
        let gate = Stack::random(GgmlType::Q4_K, dim, hidden, n_expert, &mut rng);
        let up = Stack::random(GgmlType::Q4_K, dim, hidden, n_expert, &mut rng);
        let down = Stack::random(GgmlType::Q6_K, hidden, dim, n_expert, &mut rng);
        let mut bias_values =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-2.0..2.0)).collect() };
        let (gb, ub, db) = (
            bias_values(n_expert * hidden),
            bias_values(n_expert * hidden),
            bias_values(n_expert * dim),
        );
        let biases = ExpertBiases {
            gate: &gb,
            up: &ub,
            down: &db,
        };
        let x: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let ids = [3, 1, 0, 3, 5, 2, 1, 3, 3, 0];
        let weights: Vec<f32> = (0..n * k).map(|_| rng.random_range(0.0..1.0)).collect();
        let routing = Routing {
            ids: &ids,
            weights: &weights,
            k,
        };
        let mut s = MoeScratch::new();
        let mut out = vec![f32::NAN; n * dim];
        for (act, bias) in [(Glu::Silu, None), (Glu::GPT_OSS, Some(biases))] {
            let w = Experts {
                gate: &gate,
                up: &up,
                down: &down,
                dim,
                hidden,
                n_expert,
                act,
                bias,
            };
            moe_experts(&pool, &w, &x, routing, &mut s, &mut out).unwrap();

            let mut scratch = ActScratch::new();
            for t in 0..n {
                let mut want = vec![0f32; dim];
                for slot in 0..k {
                    let e = ids[t * k + slot];
                    let xt = &x[t * dim..(t + 1) * dim];
                    let (mut g, mut u, mut d) =
                        (vec![0f32; hidden], vec![0f32; hidden], vec![0f32; dim]);
                    let xq = quantize_acts(&pool, gate.ty, xt, dim, &mut scratch).unwrap();
                    matmul_acts(&pool, &gate.expert(e).unwrap(), &xq, &mut g).unwrap();
                    matmul_acts(&pool, &up.expert(e).unwrap(), &xq, &mut u).unwrap();
                    if let Some(b) = &bias {
                        b.add_gate_up(e, hidden, &mut g, &mut u);
                    }
                    glu_inplace(act, &mut g, &u);
                    let hq = quantize_acts(&pool, down.ty, &g, hidden, &mut scratch).unwrap();
                    matmul_acts(&pool, &down.expert(e).unwrap(), &hq, &mut d).unwrap();
                    if let Some(b) = &bias {
                        b.add_down(e, dim, &mut d);
                    }
                    axpy(&mut want, weights[t * k + slot], &d);
                }
                let got = &out[t * dim..(t + 1) * dim];
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{act:?}: token {t}"
                );
            }
        }
        let w = Experts {
            gate: &gate,
            up: &up,
            down: &down,
            dim,
            hidden,
            n_expert,
            act: Glu::Silu,
            bias: None,
        };
        let short_bias = ExpertBiases {
            down: &db[..dim],
            ..biases
        };
        let wrong = Experts {
            bias: Some(short_bias),
            ..w
        };
        assert!(moe_experts(&pool, &wrong, &x, routing, &mut s, &mut out).is_err());

        // Bad input is an error, not a panic.
        let bad_ids = [3, 1, 0, 3, 5, 2, 1, 3, 3, 6];
        let bad = Routing {
            ids: &bad_ids,
            ..routing
        };
        assert!(moe_experts(&pool, &w, &x, bad, &mut s, &mut out).is_err());
        let short = Routing {
            ids: &ids[..8],
            ..routing
        };
        assert!(moe_experts(&pool, &w, &x, short, &mut s, &mut out).is_err());
        assert!(moe_experts(&pool, &w, &x[..dim * 4], routing, &mut s, &mut out).is_err());
    }
}
