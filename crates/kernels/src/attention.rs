//! Causal attention over a KV cache of any [`KvType`](crate::kvdata::KvType), split across the pool by query
//! rows and, for few rows over a long cache (decode), by position chunks as well.
//!
//! One kernel covers both attention kinds we run:
//! - grouped-query attention: K and V rows of `n_kv_head` heads each;
//! - DeepSeek MLA in the absorbed form: one shared "head" whose key is the cached
//!   `[c_kv, k_pe]` row (the query is `[q·W_UK, q_pe]`) and whose value is the `c_kv`
//!   part of the same row — so `k` and `v` may be the same buffer.
//!
//! An item is up to 16 query rows that read the same keys and values: heads of one token
//! sharing a KV head (GQA groups, MLA's absorbed form: 16 heads per latent row), or, when
//! fewer heads share one, the same heads of consecutive tokens (multi-head attention,
//! MLA's decompressed form). It walks the cached positions in blocks of [`BLOCK`]: the
//! block's rows are converted to f32 once (f16/bf16/q8_0 caches; an f32 cache is read in
//! place), scored against every query row in tiles of 4 rows × 3 positions (× 6 where
//! AVX-512 gives 32 registers), and summed into the rows' values while they are in L1/L2,
//! with an online softmax (a running max and denominator per row). Blocks are grouped
//! into chunks of [`CHUNK`] positions, each with its own softmax state, merged in order:
//! with few items (decode), the (item, chunk) pairs are spread across the threads, so two
//! threads share one sequence's attention.
//!
//! Blocks and chunks are aligned to absolute positions ([`AttnOpts::origin`]), masked
//! positions weigh exactly 0, and every (query row, cached row) score is computed by the
//! same code whatever the tiling: a token's output does not depend on the item shapes,
//! on the split, on which thread ran it, or on the rest of the batch.

use crate::kvdata::KvData;

#[path = "attention_i8.rs"]
mod i8dots;
use crate::pool::SharedMut;
use crate::ThreadPool;

/// Shapes and strides of one attention call (in values of the cache's type).
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Query/key width per head, and value width per head.
    pub dk: usize,
    pub dv: usize,
    /// Values per cached position in the key and value buffers.
    pub k_stride: usize,
    pub v_stride: usize,
    /// Where value head 0 starts within a value row.
    pub v_offset: usize,
    /// Values from one KV head's key (value) row to the next head's at the same position:
    /// `dk` (`dv`) when heads are interleaved per position; `n_ctx·dk` for a head-major
    /// buffer, whose per-head rows are then contiguous (`k_stride = dk`).
    pub k_head: usize,
    pub v_head: usize,
    /// Multiplier of q·k.
    pub scale: f32,
}

/// Per-thread block buffers and the position split's partial results.
#[derive(Default, Debug)]
pub struct AttnScratch {
    per_thread_area: Vec<f32>,
    per_thread: usize,
    partials: Vec<f32>,
    /// The int8 path's queries: bytes (rows of `i8dots::padded(dk)`), scales and sums.
    q8: Vec<u8>,
    q8_scale: Vec<f32>,
    q8_sum: Vec<i32>,
}

/// Most query rows per work item.
const MAX_ROWS: usize = 16;
/// Query rows and cached rows of one score tile.
const TILE_Q: usize = 4;
const TILE_K: usize = 3;
/// Positions per block: converted, scored and summed into the values while in cache
/// (64 rows of 576 f32 = 144 KiB, in L2).
const BLOCK: usize = 64;
/// Positions per chunk (a multiple of [`BLOCK`]): each has its own softmax state, and the
/// position split hands chunks to threads.
const CHUNK: usize = 256;
/// Most items the position split runs (its partial results are reserved for this many).
const SPLIT_ITEMS: usize = 4;

/// Per-thread floats for keys `dk` and values `dv` wide: scores, converted key and value
/// blocks, a chunk's and the running sums of the values, and 4 numbers per row.
fn per_thread_floats(dk: usize, dv: usize) -> usize {
    MAX_ROWS * BLOCK
        + BLOCK * dk
        + BLOCK * dv
        + 2 * MAX_ROWS * dv
        + 4 * MAX_ROWS
        + i8_floats(dk, dv)
}

/// Per-thread floats of the int8 path: a block's quantized keys and values, its value
/// quads, the weight quads, the rows' scales and the weight steps.
fn i8_floats(dk: usize, dv: usize) -> usize {
    let (kw, vw) = (i8dots::padded(dk), i8dots::padded(dv));
    (BLOCK * kw + BLOCK * vw + BLOCK * dv.next_multiple_of(4)) / 4
        + MAX_ROWS * BLOCK / 4
        + 2 * BLOCK
        + MAX_ROWS
}

/// Chunks a range of `n_ctx` positions can touch (one more when not aligned).
fn max_chunks(n_ctx: usize) -> usize {
    n_ctx.div_ceil(CHUNK) + 1
}

impl AttnScratch {
    /// An empty scratch.
    pub fn new() -> AttnScratch {
        AttnScratch::default()
    }
    /// Room for attention over up to `n_ctx` positions with keys `dk` and values `dv`
    /// wide on `n_threads` threads, so that [`attention`] never grows it (it would, once,
    /// for a longer context or wider rows).
    pub fn reserve_for(&mut self, n_threads: usize, n_ctx: usize, dk: usize, dv: usize) {
        self.reserve(n_threads, per_thread_floats(dk, dv));
        if n_threads > 1 {
            let want = SPLIT_ITEMS * max_chunks(n_ctx) * MAX_ROWS * (dv + 2);
            if self.partials.len() < want {
                self.partials.resize(want, 0.0);
            }
        }
    }
    /// Room for `floats` per thread: afterwards `per_thread ≥ floats` and the buffer holds
    /// `n_threads · per_thread` (a scratch may be reused with pools of other sizes).
    fn reserve(&mut self, n_threads: usize, floats: usize) {
        self.per_thread = self.per_thread.max(floats);
        let want = n_threads * self.per_thread;
        if self.per_thread_area.len() < want {
            self.per_thread_area.resize(want, 0.0);
        }
    }
}

/// Whether [`AttnOpts::int8`] takes effect on this CPU (AVX-512 F/BW/VL/VBMI/VNNI); without
/// it the int8 option computes in f32 (a q8_KV cache's rows are then converted).
pub fn int8_available() -> bool {
    i8dots::available()
}

/// What some models add to plain causal attention (gpt-oss has both), and where the
/// cache slice starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnOpts<'a> {
    /// Sliding window: the query at position `p` sees positions `p − window + 1 ..= p`
    /// only (llama.cpp's standard SWA, HF's `sliding_window`).
    pub window: Option<usize>,
    /// Attention sinks, one logit per query head: it joins each row's softmax denominator
    /// (not scaled by `scale`) and has no value.
    pub sinks: Option<&'a [f32]>,
    /// The absolute position of the slice's first cached row (a caller that passes a
    /// window's slice of its cache): blocks and chunks are aligned to absolute positions,
    /// so a token's result does not depend on where the slice starts.
    pub origin: usize,
    /// Over a q8_KV key cache, both products in 8-bit integers where the CPU has AVX-512
    /// VNNI ([`i8dots`]: queries and softmax weights quantized per row, the cache's bytes
    /// used as they are, integer sums) — the default (quantized-activation) mode's choice;
    /// `false` keeps f32 arithmetic (`--exact`). Other key types always compute in f32: the
    /// int8 path's rounding is the price of the q8_KV type, chosen with `-ctk q8_KV`.
    pub int8: bool,
}

/// `out[t, h] = softmax(scale · q[t, h] · K[0..=pos0+t]) · V[0..=pos0+t]` for the `m`
/// tokens of one sequence at positions `pos0..pos0+m`, whose keys/values (including
/// these tokens') are already in `k` / `v`. `q` is `m × n_head × dk`, `out` is
/// `m × n_head × dv`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    s: &AttnShape,
    q: &[f32],
    pos0: usize,
    k: KvData<'_>,
    v: KvData<'_>,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    attention_with(pool, s, AttnOpts::default(), q, pos0, k, v, out, scratch)
}

/// One call's fixed inputs, shared by its work items.
struct Call<'a> {
    s: &'a AttnShape,
    opts: AttnOpts<'a>,
    q: &'a [f32],
    /// `q` quantized when the int8 path runs.
    q8: Option<Q8Rows<'a>>,
    /// The int8 path reads a q8_KV cache's key (value) rows in place: one cache row per
    /// attention row, whole 64-byte steps.
    k_direct: bool,
    v_direct: bool,
    pos0: usize,
    m: usize,
    k: KvData<'a>,
    v: KvData<'a>,
    /// Values are the converted key rows from this offset (an MLA row is both).
    v_in_k: Option<usize>,
    group: usize,
    /// Heads and tokens per item, and head blocks.
    hb: usize,
    tb: usize,
    head_blocks: usize,
}

/// One thread's buffers (see [`per_thread_floats`]).
struct Bufs<'a> {
    sc: &'a mut [f32],
    kbuf: &'a mut [f32],
    vbuf: &'a mut [f32],
    /// A chunk's weighted values and (max, denominator) per row.
    acc: &'a mut [f32],
    cm: &'a mut [f32],
    cl: &'a mut [f32],
    /// The running result over the chunks merged so far.
    tacc: &'a mut [f32],
    tm: &'a mut [f32],
    tl: &'a mut [f32],
    /// The int8 path's quantized blocks ([`Call::block_i8`]).
    i8area: &'a mut [f32],
}

impl<'a> Bufs<'a> {
    fn split(area: &'a mut [f32], dk: usize, dv: usize) -> Bufs<'a> {
        let (sc, rest) = area.split_at_mut(MAX_ROWS * BLOCK);
        let (kbuf, rest) = rest.split_at_mut(BLOCK * dk);
        let (vbuf, rest) = rest.split_at_mut(BLOCK * dv);
        let (acc, rest) = rest.split_at_mut(MAX_ROWS * dv);
        let (tacc, rest) = rest.split_at_mut(MAX_ROWS * dv);
        let (cm, rest) = rest.split_at_mut(MAX_ROWS);
        let (cl, rest) = rest.split_at_mut(MAX_ROWS);
        let (tm, rest) = rest.split_at_mut(MAX_ROWS);
        let (tl, rest) = rest.split_at_mut(MAX_ROWS);
        let i8area = &mut rest[..i8_floats(dk, dv)];
        Bufs {
            sc,
            kbuf,
            vbuf,
            acc,
            cm,
            cl,
            tacc,
            tm,
            tl,
            i8area,
        }
    }
}

/// The queries of a call quantized for the int8 path: row `i` (token `i / n_head`, head
/// `i % n_head`) is `bytes[i·width..]` ≈ `scale[i] ·` its signed bytes, which sum to `sum[i]`.
#[derive(Clone, Copy)]
struct Q8Rows<'a> {
    bytes: &'a [u8],
    scale: &'a [f32],
    sum: &'a [i32],
    width: usize,
}

/// An item's query rows: row `r` is (token `t0 + r / hb`, head `h0 + r % hb`).
#[derive(Clone, Copy)]
struct Item {
    t0: usize,
    h0: usize,
    rows: usize,
    /// Positions the item's rows see: `lo..hi` (slice coordinates).
    lo: usize,
    hi: usize,
}

impl Call<'_> {
    fn item(&self, index: usize) -> Item {
        let (t0, h0) = (
            (index / self.head_blocks) * self.tb,
            (index % self.head_blocks) * self.hb,
        );
        let nt = self.tb.min(self.m - t0);
        Item {
            t0,
            h0,
            rows: nt * self.hb,
            lo: self.row_start(t0),
            hi: self.pos0 + t0 + nt,
        }
    }
    fn row_th(&self, it: &Item, r: usize) -> (usize, usize) {
        (it.t0 + r / self.hb, it.h0 + r % self.hb)
    }
    /// The first position token `t` sees (its window's start).
    fn row_start(&self, t: usize) -> usize {
        let ctx = self.pos0 + t + 1;
        self.opts.window.map_or(0, |w| ctx.saturating_sub(w))
    }
    /// Slice positions of chunk `c` (absolute chunk index), clipped to `lo..hi`.
    fn chunk_range(&self, c: usize, lo: usize, hi: usize) -> (usize, usize) {
        let a = (c * CHUNK).saturating_sub(self.opts.origin).max(lo);
        let b = ((c + 1) * CHUNK).saturating_sub(self.opts.origin).min(hi);
        (a, b.max(a))
    }

    /// The chunk's softmax state and weighted values of the item's rows over positions
    /// `a..b`, into `cm`, `cl`, `acc`.
    fn run_chunk(&self, it: &Item, a: usize, b: usize, w: &mut Bufs<'_>) {
        let s = self.s;
        let (rows, dk, dv) = (it.rows, s.dk, s.dv);
        w.cm[..rows].fill(f32::NEG_INFINITY);
        w.cl[..rows].fill(0.0);
        w.acc[..rows * dv].fill(0.0);
        let g = it.h0 / self.group;
        let mut qs: [&[f32]; MAX_ROWS] = [&[]; MAX_ROWS];
        for (r, slot) in qs.iter_mut().take(rows).enumerate() {
            let (t, h) = self.row_th(it, r);
            *slot = &self.q[(t * s.n_head + h) * dk..(t * s.n_head + h + 1) * dk];
        }
        let origin = self.opts.origin;
        let mut j0 = a;
        while j0 < b {
            // The block holding j0: absolute positions A·BLOCK.., columns (origin + j) mod BLOCK.
            let col0 = (origin + j0) % BLOCK;
            let j1 = (j0 + BLOCK - col0).min(b);
            let n = j1 - j0;
            if let Some(q8) = self.q8 {
                self.block_i8(it, q8, g, j0, col0, n, w);
                j0 = j1;
                continue;
            }
            let ks = match self.k.as_f32() {
                Some(kf) => Rows {
                    data: &kf[g * s.k_head + j0 * s.k_stride..],
                    stride: s.k_stride,
                    width: dk,
                },
                None => {
                    for (jj, row) in w.kbuf.chunks_exact_mut(dk).take(n).enumerate() {
                        self.k.read(g * s.k_head + (j0 + jj) * s.k_stride, row);
                    }
                    Rows {
                        data: &w.kbuf[..],
                        stride: dk,
                        width: dk,
                    }
                }
            };
            let sc = &mut w.sc[..rows * BLOCK];
            sc.fill(f32::NEG_INFINITY);
            item_scores(&qs[..rows], n, &ks, s.scale, &mut sc[col0..], BLOCK);
            self.softmax_block(it, j0, col0, n, sc, w.cm, w.cl, w.acc);
            let vs = match (self.v_in_k, self.v.as_f32()) {
                (Some(off), _) => Rows {
                    data: &ks.data[off..],
                    stride: ks.stride,
                    width: dv,
                },
                (None, Some(vf)) => Rows {
                    data: &vf[s.v_offset + g * s.v_head + j0 * s.v_stride..],
                    stride: s.v_stride,
                    width: dv,
                },
                (None, None) => {
                    for (jj, row) in w.vbuf.chunks_exact_mut(dv).take(n).enumerate() {
                        self.v
                            .read(s.v_offset + g * s.v_head + (j0 + jj) * s.v_stride, row);
                    }
                    Rows {
                        data: &w.vbuf[..],
                        stride: dv,
                        width: dv,
                    }
                }
            };
            item_values(&sc[col0..], BLOCK, rows, n, &vs, &mut w.acc[..rows * dv]);
            j0 = j1;
        }
    }

    /// Per row of the block's scores `sc` (rows of [`BLOCK`], the block's positions
    /// `j0..j0 + n` at columns `col0..`): mask what the row does not see, then the online
    /// softmax update — the scores become weights, the running sums are rescaled.
    #[allow(clippy::too_many_arguments)]
    fn softmax_block(
        &self,
        it: &Item,
        j0: usize,
        col0: usize,
        n: usize,
        sc: &mut [f32],
        cm: &mut [f32],
        cl: &mut [f32],
        acc: &mut [f32],
    ) {
        let dv = self.s.dv;
        for r in 0..it.rows {
            let (t, _) = self.row_th(it, r);
            let (start, ctx) = (self.row_start(t), self.pos0 + t + 1);
            let row = &mut sc[r * BLOCK..(r + 1) * BLOCK];
            for (jj, x) in row[col0..col0 + n].iter_mut().enumerate() {
                let j = j0 + jj;
                if j < start || j >= ctx {
                    *x = f32::NEG_INFINITY;
                }
            }
            let bm = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            if bm == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let m_new = cm[r].max(bm);
            let alpha = (cm[r] - m_new).exp();
            let sum = crate::softmax::exp_sub_block(row, m_new);
            cl[r] = cl[r] * alpha + sum;
            if alpha != 1.0 {
                crate::vector::scale_inplace(&mut acc[r * dv..(r + 1) * dv], alpha);
            }
            cm[r] = m_new;
        }
    }

    /// One block on the int8 path ([`i8dots`]): the block's key (and value) rows quantized
    /// once, scores in integers, the softmax update, then the values summed in position
    /// quads aligned to the block's absolute columns (a quad's positions outside the chunk
    /// weigh 0).
    #[allow(clippy::too_many_arguments)]
    fn block_i8(
        &self,
        it: &Item,
        q8: Q8Rows<'_>,
        g: usize,
        j0: usize,
        col0: usize,
        n: usize,
        w: &mut Bufs<'_>,
    ) {
        let s = self.s;
        let (rows, dk, dv) = (it.rows, s.dk, s.dv);
        let kw = q8.width;
        let vw = i8dots::padded(dv);
        let (kq, rest) = w.i8area.split_at_mut(BLOCK * kw / 4);
        let (vq, rest) = rest.split_at_mut(BLOCK * vw / 4);
        let (quads, rest) = rest.split_at_mut(BLOCK * dv / 4);
        let (wq, rest) = rest.split_at_mut(MAX_ROWS * BLOCK / 4);
        let (kscale, rest) = rest.split_at_mut(BLOCK);
        let (vscale, rest) = rest.split_at_mut(BLOCK);
        let step = &mut rest[..MAX_ROWS];
        let kq: &mut [u8] = bytemuck::cast_slice_mut(kq);
        let vq: &mut [u8] = bytemuck::cast_slice_mut(vq);
        let quads: &mut [u8] = bytemuck::cast_slice_mut(quads);
        let wq: &mut [u32] = bytemuck::cast_slice_mut(wq);
        // Keys: a q8_KV cache's rows as they are; otherwise the cache's rows as f32 (in
        // place, or converted), quantized per row.
        let (k_bytes, k_stride): (&[u8], usize) = match self.k {
            KvData::Q8Kv { row, q, d } if self.k_direct => {
                let at = g * s.k_head + j0 * s.k_stride;
                for (jj, ks) in kscale.iter_mut().enumerate().take(n) {
                    *ks = d[(at + jj * s.k_stride) / row];
                }
                (&q[at..], s.k_stride)
            }
            _ => {
                let first = g * s.k_head + j0 * s.k_stride;
                let rows = (first, s.k_stride, dk, n);
                quantize_block(self.k, rows, &mut w.kbuf[..dk], kq, kw, kscale);
                (&*kq, kw)
            }
        };
        // Values: an MLA row's are its key's bytes; a q8_KV cache's rows as they are;
        // otherwise their rows quantized.
        let (v_bytes, v_stride, v_off, vscale): (&[u8], usize, usize, &[f32]) =
            match (self.v_in_k, self.v) {
                (Some(off), _) => (k_bytes, k_stride, off, &*kscale),
                (None, KvData::Q8Kv { row, q, d }) if self.v_direct => {
                    let at = s.v_offset + g * s.v_head + j0 * s.v_stride;
                    for (jj, vs) in vscale.iter_mut().enumerate().take(n) {
                        *vs = d[(at + jj * s.v_stride) / row];
                    }
                    (&q[at..], s.v_stride, 0, &*vscale)
                }
                (None, _) => {
                    let first = s.v_offset + g * s.v_head + j0 * s.v_stride;
                    let rows = (first, s.v_stride, dv, n);
                    quantize_block(self.v, rows, &mut w.vbuf[..dv], vq, vw, vscale);
                    (&*vq, vw, 0, &*vscale)
                }
            };
        // The item's query rows: bytes, scales and sums.
        let (mut qrows, mut qd, mut qs) = ([&[][..]; MAX_ROWS], [0f32; MAX_ROWS], [0i32; MAX_ROWS]);
        for r in 0..rows {
            let (t, h) = self.row_th(it, r);
            let i = t * s.n_head + h;
            qrows[r] = &q8.bytes[i * kw..(i + 1) * kw];
            (qd[r], qs[r]) = (q8.scale[i], q8.sum[i]);
        }
        let sc = &mut w.sc[..rows * BLOCK];
        sc.fill(f32::NEG_INFINITY);
        i8dots::item_scores(
            &qrows[..rows],
            &qd,
            &qs,
            k_bytes,
            k_stride,
            kscale,
            kw,
            n,
            s.scale,
            &mut sc[col0..],
            BLOCK,
        );
        self.softmax_block(it, j0, col0, n, sc, w.cm, w.cl, w.acc);
        // Quads of absolute block columns base + 4p .. base + 4p + 4.
        let base = col0 & !3;
        let n_quads = ((col0 + n + 3) & !3).saturating_sub(base) / 4;
        let in_chunk =
            |i: usize| (base + i >= col0 && base + i < col0 + n).then(|| base + i - col0);
        let value_row = |i: usize| -> Option<&[u8]> {
            in_chunk(i).map(|jj| &v_bytes[jj * v_stride + v_off..jj * v_stride + v_off + dv])
        };
        i8dots::quad_rows(n_quads, dv, value_row, quads);
        let mut col_scale = [0f32; BLOCK];
        for (i, cs) in col_scale.iter_mut().enumerate().take(4 * n_quads) {
            *cs = in_chunk(i).map_or(0.0, |jj| vscale[jj]);
        }
        i8dots::quad_weights(
            &sc[base..],
            BLOCK,
            rows,
            n_quads,
            &col_scale,
            wq,
            BLOCK / 4,
            step,
        );
        i8dots::item_values(
            wq,
            BLOCK / 4,
            step,
            rows,
            n_quads,
            quads,
            dv,
            &mut w.acc[..rows * dv],
        );
    }
}

/// The int8 path's quantized rows of a block: cache rows `(first, stride, width, n)` (the
/// `n` rows at `first + j·stride`, `width` values each) as offset bytes in rows of `out_w`,
/// one scale each; rows not stored as f32 go through `tmp` (`width` floats).
fn quantize_block(
    data: KvData<'_>,
    (first, stride, width, n): (usize, usize, usize, usize),
    tmp: &mut [f32],
    out: &mut [u8],
    out_w: usize,
    scales: &mut [f32],
) {
    for (j, scale) in scales.iter_mut().enumerate().take(n) {
        let at = first + j * stride;
        let row: &[f32] = match data.as_f32() {
            Some(f) => &f[at..at + width],
            None => {
                data.read(at, tmp);
                tmp
            }
        };
        (*scale, _) = i8dots::quantize_row(row, &mut out[j * out_w..(j + 1) * out_w], true);
    }
}

/// Merges a chunk's state (`cm`, `cl`, `cacc`) into a running one (`tm`, `tl`, `tacc`),
/// one row: the same operations whichever thread computed the chunk.
#[inline]
fn merge_row(tm: &mut f32, tl: &mut f32, tacc: &mut [f32], cm: f32, cl: f32, cacc: &[f32]) {
    if cm == f32::NEG_INFINITY {
        return;
    }
    let m = tm.max(cm);
    let (a, b) = ((*tm - m).exp(), (cm - m).exp());
    *tl = *tl * a + cl * b;
    for (t, &c) in tacc.iter_mut().zip(cacc) {
        *t = *t * a + c * b;
    }
    *tm = m;
}

/// A row's result from its merged state: `tacc / tl`, the sink joining the denominator.
#[inline]
fn finish_row(tm: f32, tl: f32, tacc: &[f32], sink: Option<f32>, out: &mut [f32]) {
    let (mut m, mut l) = (tm, tl);
    let mut a = 1.0;
    if let Some(sk) = sink {
        let nm = m.max(sk);
        if nm == f32::NEG_INFINITY {
            out.fill(0.0);
            return;
        }
        a = (m - nm).exp();
        l = l * a + (sk - nm).exp();
        m = nm;
    }
    if m == f32::NEG_INFINITY || l == 0.0 {
        out.fill(0.0);
        return;
    }
    let inv = a / l;
    for (o, &t) in out.iter_mut().zip(tacc) {
        *o = t * inv;
    }
}

/// Item shape: (heads per item, tokens per item, whether to split by position chunks).
/// As many rows as fit (≤ 16) so cached rows are reused, enough items for the threads,
/// or, with few items over a long cache, the position split.
fn item_shape(
    n_head: usize,
    group: usize,
    m: usize,
    n_threads: usize,
    n_chunks: usize,
    can_split: bool,
) -> (usize, usize, bool) {
    let mut best = (1, MAX_ROWS.min(m.max(1)), false);
    let whole = (group <= MAX_ROWS).then_some(group);
    for hb in whole.into_iter().chain([16, 8, 4, 2, 1]) {
        if group % hb != 0 {
            continue;
        }
        let tb = (MAX_ROWS / hb).clamp(1, m.max(1));
        let items = (n_head / hb) * m.div_ceil(tb);
        if items >= n_threads {
            return (hb, tb, false);
        }
        if can_split && n_chunks > 1 && items <= SPLIT_ITEMS {
            return (hb, tb, true);
        }
        best = (hb, tb, false);
    }
    best
}

/// Where one head's rows lie in a cache buffer (in values): row `j` of head `g` is
/// `offset + g·head + j·stride .. + width`.
struct Layout {
    stride: usize,
    offset: usize,
    head: usize,
    width: usize,
}

/// Checks that `data` holds `heads` heads' rows of `n_ctx` positions laid out as `l`, in
/// whole blocks of its type.
fn check_rows(data: &KvData<'_>, l: Layout, n_ctx: usize, heads: usize, what: &str) {
    let blk = data.ty().block();
    assert!(
        l.stride % blk == 0 && l.offset % blk == 0 && l.head % blk == 0 && l.width % blk == 0,
        "attention: {what} rows are not whole {} blocks",
        data.ty()
    );
    assert!(
        data.len() >= (n_ctx - 1) * l.stride + l.offset + (heads - 1) * l.head + l.width,
        "attention: {what} cache too short"
    );
}

/// [`attention`] with a sliding window, attention sinks and the slice's origin
/// ([`AttnOpts`]). Positions are relative to `k`/`v`: a caller whose cache holds only a
/// window passes the slice that starts at its first kept position, `pos0` counted from
/// there, and that position as the origin.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    pool: &ThreadPool,
    s: &AttnShape,
    opts: AttnOpts<'_>,
    q: &[f32],
    pos0: usize,
    k: KvData<'_>,
    v: KvData<'_>,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    if let Some(sinks) = opts.sinks {
        assert_eq!(sinks.len(), s.n_head, "attention: one sink per head");
    }
    assert!(opts.window != Some(0), "attention: a window of 0 positions");
    let m = q.len() / (s.n_head * s.dk);
    assert_eq!(q.len(), m * s.n_head * s.dk, "attention: q length");
    assert_eq!(out.len(), m * s.n_head * s.dv, "attention: out length");
    assert!(
        s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0,
        "attention: heads"
    );
    if m == 0 {
        return;
    }
    let n_ctx = pos0 + m;
    let k_rows = Layout {
        stride: s.k_stride,
        offset: 0,
        head: s.k_head,
        width: s.dk,
    };
    check_rows(&k, k_rows, n_ctx, s.n_kv_head, "key");
    let v_rows = Layout {
        stride: s.v_stride,
        offset: s.v_offset,
        head: s.v_head,
        width: s.dv,
    };
    check_rows(&v, v_rows, n_ctx, s.n_kv_head, "value");
    // An MLA row is both key and value: convert it once and read the values from it.
    let v_in_k = (k.same_as(&v) && s.k_stride == s.v_stride).then(|| {
        let last = s.n_kv_head - 1;
        let lo = s.v_offset as isize;
        let hi = (s.v_offset + last * s.v_head) as isize - (last * s.k_head) as isize;
        (lo == hi && lo >= 0 && lo as usize + s.dv <= s.dk).then_some(lo as usize)
    });
    let v_in_k = v_in_k.flatten();
    let group = s.n_head / s.n_kv_head;
    let n_threads = pool.n_threads();
    // Chunks from the first token's window start to the last position.
    let first_lo = opts.window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
    let c_first = (opts.origin + first_lo) / CHUNK;
    let n_chunks = (opts.origin + n_ctx - 1) / CHUNK + 1 - c_first;
    scratch.reserve_for(n_threads, n_ctx, s.dk, s.dv);
    let (hb, tb, split) = item_shape(s.n_head, group, m, n_threads, n_chunks, n_threads > 1);
    let q8 =
        (opts.int8 && matches!(k, KvData::Q8Kv { .. }) && s.dv % 64 == 0 && i8dots::available())
            .then(|| {
                let kw = i8dots::padded(s.dk);
                let n_rows = m * s.n_head;
                scratch.q8.resize(n_rows * kw, 0);
                scratch.q8_scale.resize(n_rows, 0.0);
                scratch.q8_sum.resize(n_rows, 0);
                for (i, row) in q.chunks_exact(s.dk).enumerate() {
                    let (d, sum) =
                        i8dots::quantize_row(row, &mut scratch.q8[i * kw..(i + 1) * kw], false);
                    scratch.q8_scale[i] = d;
                    scratch.q8_sum[i] = sum;
                }
                Q8Rows {
                    bytes: &scratch.q8[..n_rows * kw],
                    scale: &scratch.q8_scale[..n_rows],
                    sum: &scratch.q8_sum[..n_rows],
                    width: kw,
                }
            });
    let rows_of = |d: &KvData<'_>, width: usize, stride: usize, head: usize, offset: usize| {
        matches!(*d, KvData::Q8Kv { row, .. }
            if row == width && width % 64 == 0 && stride % row == 0 && head % row == 0 && offset % row == 0)
    };
    let k_direct = rows_of(&k, s.dk, s.k_stride, s.k_head, 0);
    let v_direct = rows_of(&v, s.dv, s.v_stride, s.v_head, s.v_offset);
    let call = Call {
        s,
        opts,
        q,
        q8,
        k_direct,
        v_direct,
        pos0,
        m,
        k,
        v,
        v_in_k,
        group,
        hb,
        tb,
        head_blocks: s.n_head / hb,
    };
    let n_items = call.head_blocks * m.div_ceil(tb);
    let per_thread = scratch.per_thread;
    let area_ptr = SharedMut(scratch.per_thread_area.as_mut_ptr());
    let out_ptr = SharedMut(out.as_mut_ptr());
    let dv = s.dv;
    let part = MAX_ROWS * (dv + 2);
    let write_row = |t: usize, h: usize, res: &[f32]| {
        // SAFETY: row (t, h) belongs to one item only: out[(t·n_head + h)·dv..] is
        // written by no other item.
        unsafe {
            std::ptr::copy_nonoverlapping(
                res.as_ptr(),
                out_ptr.get().add((t * s.n_head + h) * dv),
                dv,
            )
        }
    };
    if !split {
        pool.run_chunked(
            n_items,
            n_items.div_ceil(4 * n_threads).max(1),
            |items, tid| {
                // SAFETY: thread `tid` alone uses area row `tid` (per_thread floats, reserved
                // for every thread of this pool above).
                let area = unsafe {
                    std::slice::from_raw_parts_mut(area_ptr.get().add(tid * per_thread), per_thread)
                };
                let mut w = Bufs::split(area, s.dk, dv);
                for index in items {
                    let it = call.item(index);
                    w.tm[..it.rows].fill(f32::NEG_INFINITY);
                    w.tl[..it.rows].fill(0.0);
                    w.tacc[..it.rows * dv].fill(0.0);
                    for c in c_first..c_first + n_chunks {
                        let (a, b) = call.chunk_range(c, it.lo, it.hi);
                        if a < b {
                            call.run_chunk(&it, a, b, &mut w);
                            for r in 0..it.rows {
                                let (tacc, acc) = (
                                    &mut w.tacc[r * dv..(r + 1) * dv],
                                    &w.acc[r * dv..(r + 1) * dv],
                                );
                                merge_row(&mut w.tm[r], &mut w.tl[r], tacc, w.cm[r], w.cl[r], acc);
                            }
                        }
                    }
                    // The chunk buffer is free now: each row's result goes through it.
                    for r in 0..it.rows {
                        let (t, h) = call.row_th(&it, r);
                        let sink = opts.sinks.map(|sk| sk[h]);
                        let res = &mut w.acc[..dv];
                        finish_row(w.tm[r], w.tl[r], &w.tacc[r * dv..(r + 1) * dv], sink, res);
                        write_row(t, h, res);
                    }
                }
            },
        );
        return;
    }
    // The position split: (item, chunk) units into the partials, then the merge.
    let units = n_items * n_chunks;
    assert!(
        units * part <= scratch.partials.len(),
        "attention: split partials reserved"
    );
    let parts_ptr = SharedMut(scratch.partials.as_mut_ptr());
    pool.run_chunked(units, 1, |us, tid| {
        // SAFETY: as above, area row `tid` is this thread's.
        let area = unsafe {
            std::slice::from_raw_parts_mut(area_ptr.get().add(tid * per_thread), per_thread)
        };
        let mut w = Bufs::split(area, s.dk, dv);
        for u in us {
            let it = call.item(u / n_chunks);
            // SAFETY: unit u alone writes partial slot u (units·part floats reserved).
            let slot =
                unsafe { std::slice::from_raw_parts_mut(parts_ptr.get().add(u * part), part) };
            let (a, b) = call.chunk_range(c_first + u % n_chunks, it.lo, it.hi);
            let (ml, acc) = slot.split_at_mut(2 * MAX_ROWS);
            if a < b {
                call.run_chunk(&it, a, b, &mut w);
                ml[..it.rows].copy_from_slice(&w.cm[..it.rows]);
                ml[MAX_ROWS..MAX_ROWS + it.rows].copy_from_slice(&w.cl[..it.rows]);
                acc[..it.rows * dv].copy_from_slice(&w.acc[..it.rows * dv]);
            } else {
                ml[..it.rows].fill(f32::NEG_INFINITY);
            }
        }
    });
    let parts = &scratch.partials[..units * part];
    pool.run_chunked(n_items, 1, |items, tid| {
        // SAFETY: as above.
        let area = unsafe {
            std::slice::from_raw_parts_mut(area_ptr.get().add(tid * per_thread), per_thread)
        };
        let w = Bufs::split(area, s.dk, dv);
        let (tacc, res) = (&mut w.tacc[..dv], &mut w.acc[..dv]);
        for index in items {
            let it = call.item(index);
            for r in 0..it.rows {
                let (mut tm, mut tl) = (f32::NEG_INFINITY, 0.0);
                tacc.fill(0.0);
                for c in 0..n_chunks {
                    let slot = &parts[(index * n_chunks + c) * part..][..part];
                    let (cm, cl) = (slot[r], slot[MAX_ROWS + r]);
                    let cacc = &slot[2 * MAX_ROWS + r * dv..][..dv];
                    merge_row(&mut tm, &mut tl, tacc, cm, cl, cacc);
                }
                let (t, h) = call.row_th(&it, r);
                finish_row(tm, tl, tacc, opts.sinks.map(|sk| sk[h]), res);
                write_row(t, h, res);
            }
        }
    });
}

/// `scores[r·ld + j] = scale · q_r · k_j` for the item's query rows `qs` and positions
/// `0..n`, in tiles of 4 rows × 3 positions (AVX2) or × 6 of 512-bit vectors (AVX-512);
/// short tiles repeat their last row / position and drop the extra results. Every pair is
/// summed the same way whatever the tile.
fn item_scores(qs: &[&[f32]], n: usize, ks: &Rows<'_>, scale: f32, scores: &mut [f32], ld: usize) {
    let rows = qs.len();
    assert!(
        n == 0 || ks.data.len() >= (n - 1) * ks.stride + ks.width,
        "attention: key rows out of range"
    );
    assert!(
        n <= ld && (rows == 0 || scores.len() >= (rows - 1) * ld + n),
        "attention: score rows"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2+FMA (and AVX-512 F for the 512-bit tiles) checked at run time; key
        // rows 0..n are in range and scores hold rows of ld ≥ n (asserted above).
        unsafe {
            if crate::simd::has_avx512vl() {
                avx2::item_scores_512(qs, n, ks, scale, scores, ld)
            } else {
                avx2::item_scores(qs, n, ks, scale, scores, ld)
            }
        };
        return;
    }
    for j in 0..n {
        for (r, q) in qs.iter().enumerate() {
            scores[r * ld + j] = dot(q, ks.row(j)) * scale;
        }
    }
}

/// Cached rows: row `j` is `data[j·stride..j·stride + width]`.
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    width: usize,
}

impl Rows<'_> {
    #[inline(always)]
    fn row(&self, j: usize) -> &[f32] {
        &self.data[j * self.stride..j * self.stride + self.width]
    }
}

/// `out[r] += Σ_j p[r·ld + j] · v_j` for positions `0..n` (rows of `dv`), in order.
fn item_values(p: &[f32], ld: usize, rows: usize, n: usize, vs: &Rows<'_>, out: &mut [f32]) {
    let dv = vs.width;
    assert!(
        n == 0 || vs.data.len() >= (n - 1) * vs.stride + dv,
        "attention: value rows out of range"
    );
    assert!(
        n <= ld && (rows == 0 || p.len() >= (rows - 1) * ld + n),
        "attention: weights"
    );
    assert!(out.len() >= rows * dv, "attention: value sums");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() && dv % 8 == 0 {
        // SAFETY: AVX2+FMA (and AVX-512 F for the 512-bit chunks) checked at run time; out
        // holds rows·dv, p rows of ld ≥ n, rows j < n of `vs` are in range (asserted
        // above).
        unsafe {
            if crate::simd::has_avx512vl() {
                avx2::item_values_512(p, ld, rows, n, vs, out)
            } else {
                avx2::item_values(p, ld, rows, n, vs, out)
            }
        };
        return;
    }
    for j in 0..n {
        let vr = vs.row(j);
        for r in 0..rows {
            axpy(&mut out[r * dv..(r + 1) * dv], p[r * ld + j], vr);
        }
    }
}

/// f32 dot product (8-wide FMA lanes on AVX2, same order on every call).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2+FMA checked at run time.
        return unsafe { avx2::dot(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `acc += alpha · x`.
#[inline]
fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2+FMA checked at run time.
        return unsafe { avx2::axpy(acc, alpha, x) };
    }
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += alpha * b;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Rows, TILE_K, TILE_Q};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i < n - 15 / n - 7 of both slices.
        unsafe {
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    s1,
                );
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                i += 8;
            }
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    /// 4 query rows × TK key rows: per pair, one 8-lane FMA accumulator over the full
    /// 8-float chunks, a horizontal sum, then the scalar tail. TK = 3: 12 accumulators +
    /// the 4 query vectors fill AVX2's 16 registers; TK = 6 takes 28 of AVX-512's 32.
    #[inline(always)]
    unsafe fn dot_tile<const TK: usize>(
        qs: &[&[f32]; TILE_Q],
        ks: &[&[f32]; TK],
    ) -> [[f32; TK]; TILE_Q] {
        let n = qs
            .iter()
            .chain(ks.iter())
            .map(|r| r.len())
            .min()
            .unwrap_or(0);
        let mut acc = [[_mm256_setzero_ps(); TK]; TILE_Q];
        let mut i = 0;
        // SAFETY: loads of 8 floats at i ≤ n − 8 of rows at least n long.
        unsafe {
            while i + 8 <= n {
                let q: [__m256; TILE_Q] =
                    std::array::from_fn(|r| _mm256_loadu_ps(qs[r].as_ptr().add(i)));
                for j in 0..TK {
                    let kv = _mm256_loadu_ps(ks[j].as_ptr().add(i));
                    for r in 0..TILE_Q {
                        acc[r][j] = _mm256_fmadd_ps(q[r], kv, acc[r][j]);
                    }
                }
                i += 8;
            }
        }
        let mut out = [[0f32; TK]; TILE_Q];
        for j in 0..TK {
            // The 4 rows' sums of key j at once (the same tree for every slot).
            let s = hsum4([acc[0][j], acc[1][j], acc[2][j], acc[3][j]]);
            for r in 0..TILE_Q {
                let mut x = s[r];
                for t in i..n {
                    x += qs[r][t] * ks[j][t];
                }
                out[r][j] = x;
            }
        }
        out
    }

    /// [`super::item_scores`] with tiles of 4 rows × TK positions: positions outer, row
    /// tiles inner, so each cached row is read from memory once per item (the item's ≤ 16
    /// query rows stay in L1).
    ///
    /// # Safety
    /// Needs AVX2 and FMA (enabled by the caller); `ks` holds rows `0..ctx` and `scores`
    /// rows of `ld ≥ ctx` floats.
    #[inline(always)]
    unsafe fn scores<const TK: usize>(
        qs: &[&[f32]],
        ctx: usize,
        ks: &Rows<'_>,
        scale: f32,
        scores: &mut [f32],
        ld: usize,
    ) {
        let rows = qs.len();
        for j0 in (0..ctx).step_by(TK) {
            let kt: [&[f32]; TK] = std::array::from_fn(|i| ks.row((j0 + i).min(ctx - 1)));
            for r0 in (0..rows).step_by(TILE_Q) {
                let qt: [&[f32]; TILE_Q] = std::array::from_fn(|i| qs[(r0 + i).min(rows - 1)]);
                // SAFETY: forwarded (AVX2+FMA enabled by the callers).
                let d = unsafe { dot_tile::<TK>(&qt, &kt) };
                for (i, row) in d.iter().enumerate().take(rows - r0) {
                    for (jj, &x) in row.iter().enumerate().take(ctx - j0) {
                        scores[(r0 + i) * ld + j0 + jj] = x * scale;
                    }
                }
            }
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA; `ks` holds rows `0..ctx`, `out` rows of `ld ≥ ctx` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn item_scores(
        qs: &[&[f32]],
        ctx: usize,
        ks: &Rows<'_>,
        scale: f32,
        out: &mut [f32],
        ld: usize,
    ) {
        // SAFETY: forwarded.
        unsafe { scores::<TILE_K>(qs, ctx, ks, scale, out, ld) }
    }

    /// [`dot_tile`] on 512-bit vectors: per pair one 16-lane FMA accumulator over the
    /// full 16-float chunks (an 8-float chunk left over goes into its lower half), the
    /// halves added, the 4 rows' horizontal sums at once, then the scalar tail.
    ///
    /// # Safety
    /// Needs AVX-512 F (enabled by the caller).
    #[inline(always)]
    unsafe fn dot_tile_512<const TK: usize>(
        qs: &[&[f32]; TILE_Q],
        ks: &[&[f32]; TK],
    ) -> [[f32; TK]; TILE_Q] {
        let n = qs
            .iter()
            .chain(ks.iter())
            .map(|r| r.len())
            .min()
            .unwrap_or(0);
        let mut acc = [[_mm512_setzero_ps(); TK]; TILE_Q];
        let mut i = 0;
        // SAFETY: loads of 16 floats at i ≤ n − 16 (then 8, masked, at i ≤ n − 8) of rows
        // at least n long.
        unsafe {
            while i + 16 <= n {
                let q: [__m512; TILE_Q] =
                    std::array::from_fn(|r| _mm512_loadu_ps(qs[r].as_ptr().add(i)));
                for j in 0..TK {
                    let kv = _mm512_loadu_ps(ks[j].as_ptr().add(i));
                    for r in 0..TILE_Q {
                        acc[r][j] = _mm512_fmadd_ps(q[r], kv, acc[r][j]);
                    }
                }
                i += 16;
            }
            if i + 8 <= n {
                let q: [__m512; TILE_Q] =
                    std::array::from_fn(|r| _mm512_maskz_loadu_ps(0xff, qs[r].as_ptr().add(i)));
                for j in 0..TK {
                    let kv = _mm512_maskz_loadu_ps(0xff, ks[j].as_ptr().add(i));
                    for r in 0..TILE_Q {
                        acc[r][j] = _mm512_fmadd_ps(q[r], kv, acc[r][j]);
                    }
                }
                i += 8;
            }
        }
        let half = |v: __m512| -> __m256 {
            // SAFETY: only called from AVX-512-enabled functions.
            unsafe {
                _mm256_add_ps(
                    _mm512_castps512_ps256(v),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
                )
            }
        };
        let mut out = [[0f32; TK]; TILE_Q];
        for j in 0..TK {
            let s = hsum4([
                half(acc[0][j]),
                half(acc[1][j]),
                half(acc[2][j]),
                half(acc[3][j]),
            ]);
            for r in 0..TILE_Q {
                let mut x = s[r];
                for t in i..n {
                    x += qs[r][t] * ks[j][t];
                }
                out[r][j] = x;
            }
        }
        out
    }

    /// [`item_scores`] in 4 × 6 tiles of 512-bit vectors (AVX-512 F: 24 accumulators + 4
    /// query vectors of its 32 registers, 16 floats per FMA).
    ///
    /// # Safety
    /// As [`item_scores`], and needs AVX-512 F.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn item_scores_512(
        qs: &[&[f32]],
        ctx: usize,
        ks: &Rows<'_>,
        scale: f32,
        scores: &mut [f32],
        ld: usize,
    ) {
        const TK: usize = 2 * TILE_K;
        let rows = qs.len();
        for j0 in (0..ctx).step_by(TK) {
            let kt: [&[f32]; TK] = std::array::from_fn(|i| ks.row((j0 + i).min(ctx - 1)));
            for r0 in (0..rows).step_by(TILE_Q) {
                let qt: [&[f32]; TILE_Q] = std::array::from_fn(|i| qs[(r0 + i).min(rows - 1)]);
                // SAFETY: AVX-512 F enabled on this function.
                let d = unsafe { dot_tile_512::<TK>(&qt, &kt) };
                for (i, row) in d.iter().enumerate().take(rows - r0) {
                    for (jj, &x) in row.iter().enumerate().take(ctx - j0) {
                        scores[(r0 + i) * ld + j0 + jj] = x * scale;
                    }
                }
            }
        }
    }

    /// [`item_values`] in 64-float column chunks of 512-bit vectors (16 accumulators);
    /// every output element is the same FMA chain over the positions as in the 256-bit
    /// paths, so the bits are theirs.
    ///
    /// # Safety
    /// As [`values`]; needs AVX-512 F.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn item_values_512(
        p: &[f32],
        ld: usize,
        rows: usize,
        n: usize,
        vs: &Rows<'_>,
        out: &mut [f32],
    ) {
        let dv = vs.width;
        for r0 in (0..rows).step_by(TILE_Q) {
            let nr = TILE_Q.min(rows - r0);
            let (pr, o) = (&p[r0 * ld..], &mut out[r0 * dv..(r0 + nr) * dv]);
            let mut c = 0;
            // SAFETY (all loops): forwarded; each chunk lies within dv.
            while c + 64 <= dv {
                unsafe { weighted_chunk_512::<4>(pr, nr, ld, 0..n, vs, o, c) };
                c += 64;
            }
            while c + 16 <= dv {
                unsafe { weighted_chunk_512::<1>(pr, nr, ld, 0..n, vs, o, c) };
                c += 16;
            }
            while c + 8 <= dv {
                unsafe { weighted_chunk::<1>(pr, nr, ld, 0..n, vs, o, c) };
                c += 8;
            }
        }
    }

    /// [`weighted_chunk`] on 512-bit vectors: `o[r·dv + c .. + 16·N] += Σ_j p[r·ld + j] ·
    /// v_row(j)[c .. c + 16·N]`.
    ///
    /// # Safety
    /// AVX-512 F enabled; as [`weighted_chunk`] with `c + 16·N ≤ dv`.
    #[inline(always)]
    unsafe fn weighted_chunk_512<const N: usize>(
        p: &[f32],
        nr: usize,
        ld: usize,
        js: Range<usize>,
        vs: &Rows<'_>,
        o: &mut [f32],
        c: usize,
    ) {
        let dv = vs.width;
        let mut acc = [[_mm512_setzero_ps(); N]; TILE_Q];
        // SAFETY (all loads/stores below): as in `weighted_chunk`, with 16·N floats.
        unsafe {
            for (r, a) in acc.iter_mut().enumerate().take(nr) {
                for (k, x) in a.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(o.as_ptr().add(r * dv + c + 16 * k));
                }
            }
            for j in js {
                let vr = vs.data.as_ptr().add(j * vs.stride + c);
                let v: [__m512; N] = std::array::from_fn(|k| _mm512_loadu_ps(vr.add(16 * k)));
                for (r, a) in acc.iter_mut().enumerate().take(nr) {
                    let w = _mm512_set1_ps(*p.get_unchecked(r * ld + j));
                    for k in 0..N {
                        a[k] = _mm512_fmadd_ps(w, v[k], a[k]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(nr) {
                for (k, x) in a.iter().enumerate() {
                    _mm512_storeu_ps(o.as_mut_ptr().add(r * dv + c + 16 * k), *x);
                }
            }
        }
    }

    /// The horizontal sums of 4 vectors, each as ((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)):
    /// 3 `hadd`s and one add instead of 4 separate reductions.
    #[inline(always)]
    fn hsum4(v: [__m256; 4]) -> [f32; 4] {
        // SAFETY: only called from AVX2-enabled functions.
        unsafe {
            let h01 = _mm256_hadd_ps(v[0], v[1]);
            let h23 = _mm256_hadd_ps(v[2], v[3]);
            let h = _mm256_hadd_ps(h01, h23);
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), s);
            out
        }
    }

    /// [`super::item_values`]: each tile of ≤ 4 rows accumulates column chunks of `8·NV`
    /// floats in registers over the positions, in order (every output element is one FMA
    /// chain over j whatever NV).
    ///
    /// # Safety
    /// Needs AVX2 and FMA (enabled by the caller); `vs.width` (`dv`) is a multiple of 8,
    /// `out` holds `rows·dv`, `p` rows of `ld ≥ n`, and `vs` holds rows `0..n`.
    #[inline(always)]
    unsafe fn values<const NV: usize>(
        p: &[f32],
        ld: usize,
        rows: usize,
        n: usize,
        vs: &Rows<'_>,
        out: &mut [f32],
    ) {
        let dv = vs.width;
        for r0 in (0..rows).step_by(TILE_Q) {
            let nr = TILE_Q.min(rows - r0);
            let (pr, o) = (&p[r0 * ld..], &mut out[r0 * dv..(r0 + nr) * dv]);
            let mut c = 0;
            // SAFETY (both loops): forwarded; each chunk lies within dv.
            while c + 8 * NV <= dv {
                unsafe { weighted_chunk::<NV>(pr, nr, ld, 0..n, vs, o, c) };
                c += 8 * NV;
            }
            while c + 8 <= dv {
                unsafe { weighted_chunk::<1>(pr, nr, ld, 0..n, vs, o, c) };
                c += 8;
            }
        }
    }

    /// `o[r·dv + c .. + 8·N] += Σ_{j ∈ js} p[r·ld + j] · v_row(j)[c .. c + 8·N]` for `nr`
    /// ≤ 4 rows, the sums in registers, positions in order.
    ///
    /// # Safety
    /// AVX2 and FMA enabled; `c + 8·N ≤ dv = vs.width`, `o` holds `nr·dv`, `p` holds
    /// rows of `ld`, `js ⊆ 0..ld`, and `vs` holds the rows `js`.
    #[inline(always)]
    unsafe fn weighted_chunk<const N: usize>(
        p: &[f32],
        nr: usize,
        ld: usize,
        js: Range<usize>,
        vs: &Rows<'_>,
        o: &mut [f32],
        c: usize,
    ) {
        let dv = vs.width;
        let mut acc = [[_mm256_setzero_ps(); N]; TILE_Q];
        // SAFETY (all loads/stores below): c + 8·N ≤ dv = the row width, r·dv + c + 8·N ≤
        // nr·dv, row j ∈ js starts at j·stride (in range per the contract), and
        // p[r·ld + j] with r < nr, j < ld likewise.
        unsafe {
            for (r, a) in acc.iter_mut().enumerate().take(nr) {
                for (k, x) in a.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(o.as_ptr().add(r * dv + c + 8 * k));
                }
            }
            for j in js {
                let vr = vs.data.as_ptr().add(j * vs.stride + c);
                let v: [__m256; N] = std::array::from_fn(|k| _mm256_loadu_ps(vr.add(8 * k)));
                for (r, a) in acc.iter_mut().enumerate().take(nr) {
                    let w = _mm256_set1_ps(*p.get_unchecked(r * ld + j));
                    for k in 0..N {
                        a[k] = _mm256_fmadd_ps(w, v[k], a[k]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(nr) {
                for (k, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(o.as_mut_ptr().add(r * dv + c + 8 * k), *x);
                }
            }
        }
    }

    /// # Safety
    /// As [`values`]; needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn item_values(
        p: &[f32],
        ld: usize,
        rows: usize,
        n: usize,
        vs: &Rows<'_>,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { values::<2>(p, ld, rows, n, vs, out) }
    }

    #[inline(always)]
    fn hsum(s: __m256) -> f32 {
        // SAFETY: only called from AVX2-enabled functions.
        unsafe {
            let q = _mm_add_ps(_mm256_extractf128_ps(s, 1), _mm256_castps256_ps128(s));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            _mm_cvtss_f32(q)
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
        let n = acc.len().min(x.len());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: loads/stores of 8 floats at i ≤ n − 8 of both slices.
        unsafe {
            while i + 8 <= n {
                let p = acc.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    p,
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
                );
                i += 8;
            }
        }
        while i < n {
            acc[i] += alpha * x[i];
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Straightforward f64 attention.
    fn reference(s: &AttnShape, q: &[f32], pos0: usize, k: &[f32], v: &[f32]) -> Vec<f64> {
        reference_with(s, AttnOpts::default(), q, pos0, k, v)
    }

    /// Straightforward f64 attention with a window and sinks.
    fn reference_with(
        s: &AttnShape,
        opts: AttnOpts<'_>,
        q: &[f32],
        pos0: usize,
        k: &[f32],
        v: &[f32],
    ) -> Vec<f64> {
        let m = q.len() / (s.n_head * s.dk);
        let mut out = vec![0f64; m * s.n_head * s.dv];
        for t in 0..m {
            for h in 0..s.n_head {
                let g = h / (s.n_head / s.n_kv_head);
                let ctx = pos0 + t + 1;
                let start = opts.window.map_or(0, |w| ctx.saturating_sub(w));
                let sc: Vec<f64> = (start..ctx)
                    .map(|j| {
                        (0..s.dk)
                            .map(|i| {
                                q[(t * s.n_head + h) * s.dk + i] as f64
                                    * k[j * s.k_stride + g * s.k_head + i] as f64
                            })
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let sink = opts.sinks.map(|sk| sk[h] as f64);
                let mx = sc.iter().cloned().fold(sink.unwrap_or(f64::MIN), f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum::<f64>() + sink.map_or(0.0, |sk| (sk - mx).exp());
                for (jw, p) in e.iter().enumerate() {
                    let j = start + jw;
                    for i in 0..s.dv {
                        out[(t * s.n_head + h) * s.dv + i] +=
                            p / z * v[j * s.v_stride + s.v_offset + g * s.v_head + i] as f64;
                    }
                }
            }
        }
        out
    }

    fn check(s: AttnShape, m: usize, pos0: usize, shared_kv: bool, threads: usize) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let n_ctx = pos0 + m;
        let q: Vec<f32> = (0..m * s.n_head * s.dk)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let k_len = (n_ctx - 1) * s.k_stride + (s.n_kv_head - 1) * s.k_head + s.dk;
        let k: Vec<f32> = (0..k_len.max(n_ctx * s.k_stride))
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let v_len = (n_ctx - 1) * s.v_stride + s.v_offset + (s.n_kv_head - 1) * s.v_head + s.dv;
        let v: Vec<f32> = if shared_kv {
            k.clone()
        } else {
            (0..v_len.max(n_ctx * s.v_stride))
                .map(|_| rng.random_range(-1.0..1.0))
                .collect()
        };
        let pool = ThreadPool::new(threads);
        let mut out = vec![0f32; m * s.n_head * s.dv];
        attention(
            &pool,
            &s,
            &q,
            pos0,
            KvData::F32(&k),
            KvData::F32(&v),
            &mut out,
            &mut AttnScratch::new(),
        );
        let want = reference(&s, &q, pos0, &k, &v);
        for (a, b) in out.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
        }
        // Same bits with one thread, and for the last token computed alone.
        let pool1 = ThreadPool::new(1);
        let mut out1 = vec![0f32; out.len()];
        attention(
            &pool1,
            &s,
            &q,
            pos0,
            KvData::F32(&k),
            KvData::F32(&v),
            &mut out1,
            &mut AttnScratch::new(),
        );
        assert_eq!(out, out1);
        let last = m - 1;
        let mut solo = vec![0f32; s.n_head * s.dv];
        attention(
            &pool,
            &s,
            &q[last * s.n_head * s.dk..],
            pos0 + last,
            KvData::F32(&k),
            KvData::F32(&v),
            &mut solo,
            &mut AttnScratch::new(),
        );
        assert_eq!(&out[last * s.n_head * s.dv..], &solo[..]);
    }

    /// The AVX2 (4 × 3) and AVX-512 (4 × 6, 512-bit) score tiles: each within rounding of
    /// the f64 dot, whatever the row and position counts (short tiles included) and the
    /// widths (16-float chunks, an 8-float one, a scalar tail).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn score_tiles_match_f64() {
        if !crate::simd::has_avx512vl() {
            return; // nothing to compare on this CPU (the AVX2 path is the only one)
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (rows, ctx, dk) in [
            (16, 37, 192),
            (5, 1, 64),
            (3, 8, 20),
            (16, 64, 576),
            (4, 7, 27),
        ] {
            let q: Vec<Vec<f32>> = (0..rows)
                .map(|_| (0..dk).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            // Rows `stride` apart from an offset, as one head of an interleaved cache.
            let stride = 2 * dk + 4;
            let k: Vec<f32> = (0..ctx * stride + dk)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let qs: Vec<&[f32]> = q.iter().map(|r| r.as_slice()).collect();
            let ks = Rows {
                data: &k[dk..],
                stride,
                width: dk,
            };
            let (mut a, mut b) = (vec![0f32; rows * ctx], vec![1f32; rows * ctx]);
            // SAFETY: AVX2+FMA and AVX-512 F checked above; `ks` holds ctx rows of dk.
            unsafe {
                avx2::item_scores(&qs, ctx, &ks, 0.5, &mut a, ctx);
                avx2::item_scores_512(&qs, ctx, &ks, 0.5, &mut b, ctx);
            }
            for r in 0..rows {
                for j in 0..ctx {
                    let want: f64 = (0..dk)
                        .map(|i| q[r][i] as f64 * ks.row(j)[i] as f64)
                        .sum::<f64>()
                        * 0.5;
                    for got in [a[r * ctx + j], b[r * ctx + j]] {
                        assert!(
                            (got as f64 - want).abs() < 1e-4,
                            "rows {rows} ctx {ctx} dk {dk}"
                        );
                    }
                }
            }
        }
    }

    /// The AVX2 (16-float) and AVX-512 (64-float) value chunks give the same bits (each
    /// element is one FMA chain over the positions), for widths with and without tail
    /// chunks.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn value_chunks_agree() {
        if !crate::simd::has_avx512vl() {
            return; // nothing to compare on this CPU (the AVX2 path is the only one)
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for (rows, ctx, dv) in [
            (16, 64, 128),
            (7, 64, 40),
            (3, 1, 8),
            (5, 60, 512),
            (4, 9, 88),
        ] {
            let p: Vec<f32> = (0..rows * ctx)
                .map(|_| rng.random_range(0.0..1.0))
                .collect();
            let stride = dv + 24;
            let v: Vec<f32> = (0..ctx * stride)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let vs = Rows {
                data: &v[8..],
                stride,
                width: dv,
            };
            let (mut a, mut b) = (vec![0f32; rows * dv], vec![0f32; rows * dv]);
            // SAFETY: AVX2+FMA and AVX-512 F checked above; dv is a multiple of 8, `vs`
            // holds ctx rows of dv, p rows·ctx, the outputs rows·dv.
            unsafe {
                avx2::item_values(&p, ctx, rows, ctx, &vs, &mut a);
                avx2::item_values_512(&p, ctx, rows, ctx, &vs, &mut b);
            }
            assert_eq!(a, b, "rows {rows} ctx {ctx} dv {dv}");
        }
    }

    /// Head-major buffers (each head's rows contiguous, as the MLA decompressed form
    /// stores them): multi-head attention with `k_stride = dk` and `k_head = n_ctx·dk`.
    #[test]
    fn head_major_matches_f64_reference() {
        for (m, pos0, threads) in [(7, 0, 2), (1, 20, 2), (19, 5, 3)] {
            let n_ctx = pos0 + m;
            let (dk, dv) = (24, 16);
            let s = AttnShape {
                n_head: 3,
                n_kv_head: 3,
                dk,
                dv,
                k_stride: dk,
                v_stride: dv,
                v_offset: 0,
                k_head: n_ctx * dk,
                v_head: n_ctx * dv,
                scale: 0.2,
            };
            check(s, m, pos0, false, threads);
        }
    }

    #[test]
    fn gqa_matches_f64_reference() {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            dk: 64,
            dv: 64,
            k_stride: 128,
            v_stride: 128,
            v_offset: 0,
            k_head: 64,
            v_head: 64,
            scale: 0.125,
        };
        check(s, 7, 0, false, 2);
        check(s, 1, 20, false, 2);
        check(s, 5, 3, false, 3);
    }

    #[test]
    fn scratch_reused_across_pool_sizes_covers_every_thread() {
        // Big rows for 1 thread, then smaller rows for 3 threads: every thread's slice
        // (per_thread floats each) must lie inside the buffer.
        let mut sc = AttnScratch::new();
        sc.reserve(1, 1000);
        sc.reserve(3, 500);
        assert!(sc.per_thread >= 500 && sc.per_thread_area.len() >= 3 * sc.per_thread);
        sc.reserve(2, 2000);
        assert!(sc.per_thread >= 2000 && sc.per_thread_area.len() >= 2 * sc.per_thread);
    }

    #[test]
    fn multi_head_matches_f64_reference() {
        // One KV head per query head (MLA's decompressed form: dk 192, dv 128): items are
        // blocks of 4 tokens, whose causal lengths differ.
        let s = AttnShape {
            n_head: 3,
            n_kv_head: 3,
            dk: 48,
            dv: 32,
            k_stride: 3 * 48,
            v_stride: 3 * 32,
            v_offset: 0,
            k_head: 48,
            v_head: 32,
            scale: 0.2,
        };
        check(s, 9, 0, false, 2);
        check(s, 6, 5, false, 2);
        check(s, 1, 11, false, 1);
        check(s, 3, 2, false, 3);
    }

    #[test]
    fn sixteen_heads_long_context_match_f64_reference() {
        // 16 query heads per KV row (items of up to 16 rows, several score tiles) over
        // contexts longer than one 64-position value block; and 8 heads per KV head.
        let mla = AttnShape {
            n_head: 16,
            n_kv_head: 1,
            dk: 40,
            dv: 32,
            k_stride: 40,
            v_stride: 40,
            v_offset: 0,
            k_head: 40,
            v_head: 32,
            scale: 0.15,
        };
        check(mla, 7, 100, true, 2);
        check(mla, 1, 150, true, 2);
        check(mla, 20, 3, true, 3);
        let gqa = AttnShape {
            n_head: 16,
            n_kv_head: 2,
            dk: 24,
            dv: 16,
            k_stride: 48,
            v_stride: 32,
            v_offset: 0,
            k_head: 24,
            v_head: 16,
            scale: 0.2,
        };
        check(gqa, 5, 70, false, 2);
        check(gqa, 1, 0, false, 1);
    }

    #[test]
    fn mla_shared_row_matches_f64_reference() {
        // Key = the whole [c_kv, k_pe] row (288), value = its first 256 floats.
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 1,
            dk: 288,
            dv: 256,
            k_stride: 288,
            v_stride: 288,
            v_offset: 0,
            k_head: 288,
            v_head: 256,
            scale: 0.1,
        };
        check(s, 6, 0, true, 2);
        check(s, 1, 40, true, 2);
    }

    /// Sliding window and sinks against the f64 reference, on one and two threads, and a
    /// token's row alone equal to its row in the batch.
    #[test]
    fn window_and_sinks_match_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            dk: 64,
            dv: 64,
            k_stride: 128,
            v_stride: 128,
            v_offset: 0,
            k_head: 64,
            v_head: 64,
            scale: 0.125,
        };
        let sinks: Vec<f32> = (0..4).map(|_| rng.random_range(-2.0..3.0)).collect();
        for (window, pos0, m) in [
            (Some(8), 0, 20),
            (Some(8), 13, 5),
            (Some(1), 3, 4),
            (None, 5, 9),
        ] {
            let n_ctx = pos0 + m;
            let q: Vec<f32> = (0..m * 4 * 64)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let k: Vec<f32> = (0..n_ctx * 128)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let v: Vec<f32> = (0..n_ctx * 128)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let opts = AttnOpts {
                window,
                sinks: Some(&sinks),
                origin: 0,
                int8: false,
            };
            let want = reference_with(&s, opts, &q, pos0, &k, &v);
            let mut outs = Vec::new();
            for threads in [1, 2] {
                let pool = ThreadPool::new(threads);
                let mut out = vec![0f32; m * 4 * 64];
                let mut scratch = AttnScratch::new();
                attention_with(
                    &pool,
                    &s,
                    opts,
                    &q,
                    pos0,
                    KvData::F32(&k),
                    KvData::F32(&v),
                    &mut out,
                    &mut scratch,
                );
                for (a, b) in out.iter().zip(&want) {
                    assert!(
                        (*a as f64 - b).abs() < 1e-4,
                        "{window:?} {pos0} {m}: {a} vs {b}"
                    );
                }
                outs.push(out);
            }
            assert_eq!(outs[0], outs[1]);
            let pool = ThreadPool::new(2);
            let mut solo = vec![0f32; 4 * 64];
            let last = m - 1;
            attention_with(
                &pool,
                &s,
                opts,
                &q[last * 4 * 64..],
                pos0 + last,
                KvData::F32(&k),
                KvData::F32(&v),
                &mut solo,
                &mut AttnScratch::new(),
            );
            assert_eq!(&outs[0][last * 4 * 64..], &solo[..]);
        }
    }

    /// Every cache type, against the f64 reference over the values the cache holds (its
    /// own rounding is the type's business, tested in `kvdata`): 1, 2 and 3 threads give
    /// the same bits (the position split included: one token over 1000 positions), and a
    /// token alone gives the bits it gets in its batch.
    #[test]
    fn every_cache_type_matches_f64_reference_and_is_split_invariant() {
        use crate::kvdata::{KvBuf, KvType};
        let mla = AttnShape {
            n_head: 16,
            n_kv_head: 1,
            dk: 96,
            dv: 64,
            k_stride: 96,
            v_stride: 96,
            v_offset: 0,
            k_head: 96,
            v_head: 64,
            scale: 0.1,
        };
        let gqa = AttnShape {
            n_head: 6,
            n_kv_head: 2,
            dk: 32,
            dv: 64,
            k_stride: 64,
            v_stride: 128,
            v_offset: 0,
            k_head: 32,
            v_head: 64,
            scale: 0.2,
        };
        // Widths of whole 64-byte steps: the int8 path reads q8_KV rows in place.
        let mla64 = AttnShape {
            n_head: 8,
            dk: 128,
            k_stride: 128,
            k_head: 128,
            ..mla
        };
        let gqa64 = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            dk: 64,
            dv: 64,
            k_stride: 128,
            v_stride: 128,
            k_head: 64,
            v_head: 64,
            ..gqa
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        for (ty, int8) in KvType::ALL
            .into_iter()
            .flat_map(|t| [(t, false), (t, true)])
        {
            for (s, shared) in [(mla, true), (gqa, false), (mla64, true), (gqa64, false)] {
                for (m, pos0, window) in [
                    (1, 1000, None),
                    (5, 300, None),
                    (20, 0, None),
                    (3, 700, Some(300)),
                ] {
                    let n_ctx = pos0 + m;
                    let q: Vec<f32> = (0..m * s.n_head * s.dk)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    let kf: Vec<f32> = (0..n_ctx * s.k_stride)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    let vf: Vec<f32> = (0..n_ctx * s.v_stride)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    // q8_KV rows: an MLA row whole, a GQA head's row.
                    let k_row = if shared { s.k_stride } else { s.dk };
                    let mut kb = KvBuf::zeroed(ty, kf.len(), k_row);
                    kb.write(0, &kf);
                    let v_row = if shared { s.v_stride } else { s.dv };
                    let mut vb = KvBuf::zeroed(ty, vf.len(), v_row);
                    vb.write(0, &vf);
                    let (k, v) = (kb.data(), if shared { kb.data() } else { vb.data() });
                    let mut kd = vec![0f32; k.len()];
                    k.read_scalar(0, &mut kd);
                    let mut vd = vec![0f32; v.len()];
                    v.read_scalar(0, &mut vd);
                    let opts = AttnOpts {
                        window,
                        int8,
                        ..AttnOpts::default()
                    };
                    let want = reference_with(&s, opts, &q, pos0, &kd, &vd);
                    // The int8 path quantizes queries, rows and weights: a looser bound per
                    // value, and a mean error that shows it is not merely bounded.
                    let int8_runs = int8 && ty == KvType::Q8Kv && int8_available();
                    let (tol, mean_tol) = if int8_runs {
                        (3e-2, 4e-3)
                    } else {
                        (1e-4, 1e-4)
                    };
                    let mut outs = Vec::new();
                    for threads in [1, 2, 3] {
                        let pool = ThreadPool::new(threads);
                        let mut out = vec![0f32; m * s.n_head * s.dv];
                        let mut sc = AttnScratch::new();
                        attention_with(&pool, &s, opts, &q, pos0, k, v, &mut out, &mut sc);
                        let mut err = 0f64;
                        for (a, b) in out.iter().zip(&want) {
                            let e = (*a as f64 - b).abs();
                            err += e;
                            assert!(e < tol, "{ty} int8 {int8} {m} {pos0}: {a} vs {b}");
                        }
                        let mean = err / out.len() as f64;
                        assert!(
                            mean < mean_tol,
                            "{ty} int8 {int8} {m} {pos0}: mean error {mean}"
                        );
                        outs.push(out);
                    }
                    assert_eq!(outs[0], outs[1], "{ty} {int8} {m} {pos0}: 1 vs 2 threads");
                    assert_eq!(outs[0], outs[2], "{ty} {int8} {m} {pos0}: 1 vs 3 threads");
                    let last = m - 1;
                    let mut solo = vec![0f32; s.n_head * s.dv];
                    let pool = ThreadPool::new(2);
                    let q_last = &q[last * s.n_head * s.dk..];
                    let mut sc = AttnScratch::new();
                    attention_with(
                        &pool,
                        &s,
                        opts,
                        q_last,
                        pos0 + last,
                        k,
                        v,
                        &mut solo,
                        &mut sc,
                    );
                    assert_eq!(
                        &outs[0][last * s.n_head * s.dv..],
                        &solo[..],
                        "{ty} {int8} solo"
                    );
                }
            }
        }
    }

    /// A window's slice of the cache (from its first seen position, passed as the origin)
    /// gives the bits the whole cache gives: blocks and chunks follow absolute positions.
    #[test]
    fn window_slice_with_origin_equals_whole_cache() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(29);
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 1,
            dk: 32,
            dv: 32,
            k_stride: 32,
            v_stride: 32,
            v_offset: 0,
            k_head: 32,
            v_head: 32,
            scale: 0.3,
        };
        let (pos0, m, w) = (611, 1, 300);
        let n_ctx = pos0 + m;
        let q: Vec<f32> = (0..m * 4 * 32)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let k: Vec<f32> = (0..n_ctx * 32)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let v: Vec<f32> = (0..n_ctx * 32)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let pool = ThreadPool::new(2);
        let whole_opts = AttnOpts {
            window: Some(w),
            ..AttnOpts::default()
        };
        let mut whole = vec![0f32; 4 * 32];
        let (kd, vd) = (KvData::F32(&k), KvData::F32(&v));
        attention_with(
            &pool,
            &s,
            whole_opts,
            &q,
            pos0,
            kd,
            vd,
            &mut whole,
            &mut AttnScratch::new(),
        );
        let lo = pos0 + 1 - w;
        let slice_opts = AttnOpts {
            origin: lo,
            ..whole_opts
        };
        let mut sliced = vec![0f32; 4 * 32];
        let (ks, vs) = (KvData::F32(&k[lo * 32..]), KvData::F32(&v[lo * 32..]));
        attention_with(
            &pool,
            &s,
            slice_opts,
            &q,
            pos0 - lo,
            ks,
            vs,
            &mut sliced,
            &mut AttnScratch::new(),
        );
        assert_eq!(whole, sliced);
    }
}
