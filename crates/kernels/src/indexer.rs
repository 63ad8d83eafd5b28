//! DeepSeek Sparse Attention's lightning indexer, on the thread pool: the score of every
//! cached position for a run of consecutive queries, and each query's top-k positions.
//!
//! `score(p) = Σ_h w_h · max(0, q_h · k_p)` over the indexer's heads (the model stage,
//! `model::stage::indexer`, computes q, w and the keys). Work is split into (query row,
//! block of positions) items; every score is computed by the same code whatever the
//! split, so the scores and selections do not depend on the number of threads.

use std::ops::Range;

use crate::attention::dot;
use crate::pool::{SharedMut, ThreadPool};

/// Positions scored by one work item (its keys stay in L1 across the heads).
const BLOCK: usize = 64;

/// The indexer's query geometry: `n_head` heads of `head_dim` values; one key of
/// `head_dim` values per position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexShape {
    pub n_head: usize,
    pub head_dim: usize,
}

/// One position's score for one query (`q`: `n_head · head_dim`, `w`: `n_head`).
#[inline]
fn score(q: &[f32], w: &[f32], key: &[f32], head_dim: usize) -> f32 {
    // Accumulating from +0 keeps an all-zero score +0 (never -0), so that ranking by
    // `total_cmp` treats every zero score alike.
    let mut s = 0.0f32;
    for (qh, &wh) in q.chunks_exact(head_dim).zip(w) {
        s += wh * dot(qh, key).max(0.0);
    }
    s
}

/// Scores `n` consecutive queries: query `i` (row `i` of `q`, `n × n_head·head_dim`, and
/// of `w`, `n × n_head`) at position `pos0 + i` scores positions `0..=pos0 + i` of
/// `keys` (one row of `head_dim` per position) into `scores[i·stride + p]`; the rest of
/// each row of `scores` is left as it was.
///
/// Panics if a buffer is shorter than that or `stride < pos0 + n`.
#[allow(clippy::too_many_arguments)]
pub fn index_scores(
    pool: &ThreadPool,
    shape: IndexShape,
    q: &[f32],
    w: &[f32],
    keys: &[f32],
    pos0: usize,
    scores: &mut [f32],
    stride: usize,
) {
    let IndexShape { n_head, head_dim } = shape;
    let q_w = n_head * head_dim;
    assert!(q_w > 0, "index_scores: empty indexer shape {shape:?}");
    let n = q.len() / q_w;
    let ctx = pos0 + n;
    assert!(
        q.len() == n * q_w
            && w.len() >= n * n_head
            && keys.len() >= ctx * head_dim
            && stride >= ctx
            && scores.len() >= (n.max(1) - 1) * stride + ctx.min(stride),
        "index_scores: {n} queries at {pos0}.. with stride {stride}: q {} w {} keys {} scores {}",
        q.len(),
        w.len(),
        keys.len(),
        scores.len()
    );
    if n == 0 {
        return;
    }
    let blocks = ctx.div_ceil(BLOCK);
    let dst = SharedMut(scores.as_mut_ptr());
    // Items: query i's position blocks are items i·blocks .. (i+1)·blocks.
    pool.run_chunked(n * blocks, 1, |items: Range<usize>, _| {
        for item in items {
            let (i, b) = (item / blocks, item % blocks);
            let end = (pos0 + i + 1).min((b + 1) * BLOCK);
            let start = b * BLOCK;
            if start >= end {
                continue; // a block past this query's causal limit
            }
            let (qi, wi) = (&q[i * q_w..(i + 1) * q_w], &w[i * n_head..(i + 1) * n_head]);
            for p in start..end {
                let s = score(qi, wi, &keys[p * head_dim..(p + 1) * head_dim], head_dim);
                // SAFETY: item (i, b) alone writes scores[i·stride + p] for p in its block
                // of query i's positions, p < pos0 + n ≤ stride, and the assert above
                // makes that index in bounds.
                unsafe { *dst.get().add(i * stride + p) = s };
            }
        }
    });
}

/// For each of `n` queries, query `i` at position `pos0 + i` (at least `k - 1`): the `k`
/// highest of `scores[i·stride .. i·stride + pos0 + i + 1]` (equal scores: the earlier
/// position), in ascending position order, into `selected[i·k .. (i+1)·k]`. `order` is
/// scratch of `n · stride` values.
///
/// Panics on buffers too short, `k == 0`, or a query with fewer than `k` positions.
#[allow(clippy::too_many_arguments)]
pub fn top_k_rows(
    pool: &ThreadPool,
    scores: &[f32],
    stride: usize,
    pos0: usize,
    n: usize,
    k: usize,
    order: &mut [u32],
    selected: &mut [u32],
) {
    assert!(
        k > 0
            && pos0 + 1 >= k
            && stride >= pos0 + n
            && scores.len() >= n * stride
            && order.len() >= n * stride
            && selected.len() >= n * k,
        "top_k_rows: top {k} of {n} queries at {pos0}.. with stride {stride}: scores {} order {} selected {}",
        scores.len(),
        order.len(),
        selected.len()
    );
    let (order_at, sel_at) = (
        SharedMut(order.as_mut_ptr()),
        SharedMut(selected.as_mut_ptr()),
    );
    pool.run_chunked(n, 1, |rows: Range<usize>, _| {
        for i in rows {
            let len = pos0 + i + 1;
            let row = &scores[i * stride..i * stride + len];
            // SAFETY: only query i touches order[i·stride ..][..len] and
            // selected[i·k ..][..k]; len ≤ stride and the assert bounds both buffers.
            let (ord, chosen) = unsafe {
                (
                    std::slice::from_raw_parts_mut(order_at.get().add(i * stride), len),
                    std::slice::from_raw_parts_mut(sel_at.get().add(i * k), k),
                )
            };
            ord.iter_mut().enumerate().for_each(|(p, o)| *o = p as u32);
            // Highest score first; among equal scores the earlier position. A strict
            // total order, so the chosen set is unique.
            ord.select_nth_unstable_by(k - 1, |a, b| {
                row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b))
            });
            chosen.copy_from_slice(&ord[..k]);
            chosen.sort_unstable();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for test data in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The definition, one score at a time in f64.
    fn reference_scores(
        shape: IndexShape,
        q: &[f32],
        w: &[f32],
        keys: &[f32],
        pos: usize,
    ) -> Vec<f64> {
        let hd = shape.head_dim;
        (0..=pos)
            .map(|p| {
                let k = &keys[p * hd..(p + 1) * hd];
                (0..shape.n_head)
                    .map(|h| {
                        let d: f64 = q[h * hd..(h + 1) * hd]
                            .iter()
                            .zip(k)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum();
                        w[h] as f64 * d.max(0.0)
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn scores_match_the_definition_and_selections_the_ranking() {
        let shape = IndexShape {
            n_head: 3,
            head_dim: 20,
        };
        let (pos0, n, k) = (150, 7, 16);
        let ctx = pos0 + n;
        let q = values(1, n * 60);
        let w = values(2, n * 3);
        let keys = values(3, ctx * 20);
        let stride = ctx + 5;
        let pool = ThreadPool::new(2);
        let mut scores = vec![f32::NAN; n * stride];
        index_scores(&pool, shape, &q, &w, &keys, pos0, &mut scores, stride);
        let mut order = vec![0u32; n * stride];
        let mut selected = vec![0u32; n * k];
        top_k_rows(
            &pool,
            &scores,
            stride,
            pos0,
            n,
            k,
            &mut order,
            &mut selected,
        );
        for i in 0..n {
            let want = reference_scores(
                shape,
                &q[i * 60..(i + 1) * 60],
                &w[i * 3..(i + 1) * 3],
                &keys,
                pos0 + i,
            );
            let row = &scores[i * stride..(i + 1) * stride];
            for (p, &s) in want.iter().enumerate() {
                assert!((row[p] as f64 - s).abs() < 1e-4, "query {i} position {p}");
            }
            assert!(
                row[pos0 + i + 1..].iter().all(|v| v.is_nan()),
                "query {i} wrote past its causal limit"
            );
            // Every chosen position outranks every one left out.
            let chosen = &selected[i * k..(i + 1) * k];
            assert!(chosen.windows(2).all(|p| p[0] < p[1]), "{chosen:?}");
            let worst_in = chosen
                .iter()
                .map(|&p| row[p as usize])
                .fold(f32::INFINITY, f32::min);
            let best_out = (0..=pos0 + i)
                .filter(|p| !chosen.contains(&(*p as u32)))
                .map(|p| row[p])
                .fold(f32::NEG_INFINITY, f32::max);
            assert!(worst_in >= best_out, "query {i}: {worst_in} < {best_out}");
        }
    }

    #[test]
    fn ties_go_to_the_earlier_position_and_zero_scores_are_alike() {
        // Keys orthogonal to the query score 0 whatever the sign of the head weight:
        // with k = 3 of 6 positions, one positive score, the rest ties at zero.
        let shape = IndexShape {
            n_head: 2,
            head_dim: 2,
        };
        let q = [1.0, 0.0, 1.0, 0.0];
        let w = [0.5, -2.0];
        let keys = [0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0, 3.0, 0.0, 1.0];
        let pool = ThreadPool::new(1);
        let mut scores = vec![0.0; 6];
        index_scores(&pool, shape, &q, &w, &keys, 5, &mut scores, 6);
        assert_eq!(scores, [0.0, 0.0, 0.0, -1.5, 0.0, 0.0]);
        assert!(scores.iter().all(|s| !(*s == 0.0 && s.is_sign_negative())));
        let (mut order, mut sel) = (vec![0; 6], vec![0; 3]);
        top_k_rows(&pool, &scores, 6, 5, 1, 3, &mut order, &mut sel);
        assert_eq!(sel, [0, 1, 2]);
    }

    #[test]
    fn one_two_and_three_threads_agree_bit_for_bit() {
        let shape = IndexShape {
            n_head: 4,
            head_dim: 32,
        };
        let (pos0, n, k) = (300, 40, 24);
        let ctx = pos0 + n;
        let q = values(7, n * 128);
        let w = values(8, n * 4);
        let keys = values(9, ctx * 32);
        let run = |threads| {
            let pool = ThreadPool::new(threads);
            let mut scores = vec![0.0; n * ctx];
            index_scores(&pool, shape, &q, &w, &keys, pos0, &mut scores, ctx);
            let (mut order, mut sel) = (vec![0; n * ctx], vec![0; n * k]);
            top_k_rows(&pool, &scores, ctx, pos0, n, k, &mut order, &mut sel);
            (scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), sel)
        };
        let one = run(1);
        assert_eq!(run(2), one);
        assert_eq!(run(3), one);
    }
}
