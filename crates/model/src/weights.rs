//! Weights: views into the mapped GGUF file, bound to layers by name and checked
//! against the hyper-parameters (llama2.c's `TransformerWeights`).

use std::sync::Arc;

use gguf::{GgmlType, Gguf};
use kernels::ThreadPool;

use crate::memplan::{PlanItem, WeightClass};
use crate::placement::TensorInfo;

use crate::ModelError;

/// A weight matrix (or a stack of them: experts, heads) stored in the file, or derived
/// from the file's weights at load (see [`Matrix::derived`]).
/// Row `r` of slab `s` holds `n_in` values: output `r` is `row · x`.
#[derive(Clone)]
pub struct Matrix {
    source: Source,
    /// The weights repacked at load into anonymous memory (see [`Weights::repack`]), slab
    /// after slab; `None`: the kernels read the mapped file.
    packed: Option<Arc<PackedWeights>>,
    pub ty: GgmlType,
    /// Row length (`ne[0]`).
    pub n_in: usize,
    /// Rows per slab (`ne[1]`).
    pub n_out: usize,
    /// Slabs (`ne[2]`: experts or heads), 1 for a plain matrix.
    pub n_slab: usize,
}

/// Where a matrix's bytes (in a GGUF block type) live.
#[derive(Clone)]
enum Source {
    /// Tensor `index` of the mapped file.
    File { file: Arc<Gguf>, index: usize },
    /// Computed at load from the file's weights (e.g. a transposed copy).
    Derived { name: Arc<str>, bytes: Arc<[u8]> },
    /// Tensor `index` of the file converted at load to another type (a placement rule's
    /// `requantized:TYPE`); the file's pages are no longer read.
    Converted {
        file: Arc<Gguf>,
        index: usize,
        bytes: Arc<[u8]>,
    },
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} [{} x {} x {}]",
            self.name(),
            self.ty,
            self.n_in,
            self.n_out,
            self.n_slab
        )
    }
}

impl Matrix {
    /// A matrix computed at load: `bytes` hold `n_slab` slabs of `n_out` rows of `n_in`
    /// values of `ty`, as a GGUF tensor would. `name` says where it came from.
    pub fn derived(
        name: String,
        ty: GgmlType,
        n_in: usize,
        n_out: usize,
        n_slab: usize,
        bytes: Vec<u8>,
    ) -> Result<Matrix, ModelError> {
        let want = ty
            .row_bytes(n_in as u64)
            .map(|rb| rb as usize * n_out * n_slab);
        if want != Some(bytes.len()) {
            return Err(ModelError::Kernel(format!(
                "{name}: {} bytes do not hold {n_slab} x {n_out} rows of {n_in} {ty} values",
                bytes.len()
            )));
        }
        Ok(Matrix {
            source: Source::Derived {
                name: name.into(),
                bytes: bytes.into(),
            },
            packed: None,
            ty,
            n_in,
            n_out,
            n_slab,
        })
    }
    /// Tensor name in the file (or the description of a derived matrix).
    pub fn name(&self) -> &str {
        match &self.source {
            Source::File { file, index } | Source::Converted { file, index, .. } => {
                &file.tensors()[*index].name
            }
            Source::Derived { name, .. } => name,
        }
    }
    /// All bytes of the tensor.
    pub fn data(&self) -> &[u8] {
        match &self.source {
            Source::File { file, index } => file.view(&file.tensors()[*index]).data,
            Source::Derived { bytes, .. } | Source::Converted { bytes, .. } => bytes,
        }
    }
    /// Whether two matrices are the same file tensor (e.g. `output` tied to `token_embd`).
    fn same_tensor(&self, other: &Matrix) -> bool {
        match (&self.source, &other.source) {
            (Source::File { file: fa, index: a }, Source::File { file: fb, index: b }) => {
                Arc::ptr_eq(fa, fb) && a == b
            }
            _ => false,
        }
    }
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.n_in as u64).unwrap_or(0) as usize
    }
    /// Bytes of slab `s` (expert or head `s`).
    pub fn slab(&self, s: usize) -> &[u8] {
        let n = self.row_bytes() * self.n_out;
        &self.data()[s * n..(s + 1) * n]
    }
    /// The whole stack as one matrix of `n_slab · n_out` rows (slabs are contiguous whole
    /// groups of rows, in the file and when repacked): e.g. all heads' `attn_v_b` at once.
    pub fn flattened(&self) -> Matrix {
        Matrix {
            n_out: self.n_out * self.n_slab,
            n_slab: 1,
            ..self.clone()
        }
    }
    /// Bytes of the weights (for memory summaries).
    pub fn bytes(&self) -> usize {
        self.row_bytes() * self.n_out * self.n_slab
    }
    /// Whether the kernels use a repacked copy (see [`Weights::repack`]).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }
    /// The kernels' view of slab `s`: the repacked copy when there is one, else the file's
    /// bytes. ([`Self::slab`] keeps returning the file's bytes, e.g. for the exact mode.)
    pub fn qmatrix(&self, s: usize) -> Result<kernels::matmul::QMatrix<'_>, ModelError> {
        let err =
            |e: kernels::matmul::MatmulError| ModelError::Kernel(format!("{}: {e}", self.name()));
        match &self.packed {
            Some(p) => {
                let n = p.bytes.len() / self.n_slab.max(1);
                let bytes = p.bytes.get(s * n..(s + 1) * n).ok_or_else(|| {
                    ModelError::Kernel(format!(
                        "{}: slab {s} out of range ({} slabs)",
                        self.name(),
                        self.n_slab
                    ))
                })?;
                kernels::matmul::QMatrix::packed(p.ty, self.n_in, self.n_out, bytes).map_err(err)
            }
            None => kernels::matmul::QMatrix::new(self.ty, self.n_in, self.n_out, self.slab(s))
                .map_err(err),
        }
    }

    /// Bytes of this matrix's repacked copy, or 0 when its type or shape has no packed
    /// layout (or it is packed already).
    pub fn packed_bytes(&self) -> usize {
        if self.packed.is_some() || self.n_out == 0 {
            return 0;
        }
        quant::repack::PackedType::for_type(self.ty)
            .and_then(|pt| pt.matrix_bytes(self.n_in, self.n_out))
            .map_or(0, |b| b * self.n_slab)
    }

    /// The index of the file tensor this matrix was read from (`None` for a derived
    /// matrix).
    pub fn file_index(&self) -> Option<usize> {
        match &self.source {
            Source::File { index, .. } | Source::Converted { index, .. } => Some(*index),
            Source::Derived { .. } => None,
        }
    }

    /// Whether its bytes were computed at load (derived or converted: anonymous memory)
    /// rather than mapped from the file.
    pub fn computed_at_load(&self) -> bool {
        !matches!(self.source, Source::File { .. })
    }

    /// Converts the weights to type `to` at load (dequantize, then quantize with the
    /// repo's weight quantizers), rows split across the pool; returns the new bytes. The
    /// file's pages are released afterwards. Must come before [`Self::repack`].
    fn requantize(&mut self, to: GgmlType, pool: &ThreadPool) -> Result<usize, ModelError> {
        let err =
            |e: String| ModelError::Input(format!("{}: requantize to {to}: {e}", self.name()));
        if self.packed.is_some() {
            return Err(err("already repacked".into()));
        }
        let (src_rb, n_in, from) = (self.row_bytes(), self.n_in, self.ty);
        let dst_rb = to
            .row_bytes(n_in as u64)
            .filter(|_| n_in % to.block_size() == 0)
            .ok_or_else(|| err(format!("rows of {n_in} values are not whole blocks")))?
            as usize;
        let rows = self.n_out * self.n_slab;
        let mut bytes = vec![0u8; rows * dst_rb];
        // Chunks of whole rows, about 1 MiB of output each.
        let per = ((1 << 20) / dst_rb.max(1)).clamp(1, rows.max(1));
        let chunks: Vec<std::sync::Mutex<&mut [u8]>> = bytes
            .chunks_mut(per * dst_rb)
            .map(std::sync::Mutex::new)
            .collect();
        let first_error = std::sync::Mutex::new(None);
        let src = self.data();
        pool.run_chunked(chunks.len(), 1, |range, _| {
            let mut row = vec![0f32; n_in];
            for c in range {
                // Each chunk is taken by exactly one item: the lock is never contended.
                let mut dst = chunks[c].lock().unwrap_or_else(|p| p.into_inner());
                for (r, out) in dst.chunks_exact_mut(dst_rb).enumerate() {
                    let at = (c * per + r) * src_rb;
                    let result = quant::dequantize(from, &src[at..at + src_rb], &mut row)
                        .and_then(|()| quant::quantize(to, &row, out));
                    if let Err(e) = result {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            }
        });
        drop(chunks);
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(err(e.to_string()));
        }
        let n = bytes.len();
        self.source = match &self.source {
            Source::File { file, index } | Source::Converted { file, index, .. } => {
                file.release_pages(&file.tensors()[*index]);
                Source::Converted {
                    file: file.clone(),
                    index: *index,
                    bytes: bytes.into(),
                }
            }
            Source::Derived { name, .. } => Source::Derived {
                name: name.clone(),
                bytes: bytes.into(),
            },
        };
        self.ty = to;
        Ok(n)
    }

    /// Repacks this matrix if its type and shape have a packed layout, its row groups
    /// split across the pool's threads (each reads its share of the mapped file, so cold
    /// pages are read in parallel); returns the packed bytes (0 if left as is). The mapped
    /// pages are released afterwards.
    fn repack(&mut self, pool: &ThreadPool) -> Result<usize, ModelError> {
        let total = self.packed_bytes();
        let Some(pt) = quant::repack::PackedType::for_type(self.ty).filter(|_| total > 0) else {
            return Ok(0);
        };
        let mut bytes = kernels::matmul::WeightBuffer::zeroed(total)
            .map_err(|e| ModelError::Kernel(format!("{}: {e}", self.name())))?;
        // Slabs are contiguous whole groups of rows, so the stack packs as one matrix of
        // n_slab · n_out rows, in chunks of whole groups (about 1 MiB of output each).
        let rows = self.n_out * self.n_slab;
        let (groups, rb) = (rows / quant::repack::ROWS, self.row_bytes());
        let gb = total / groups;
        let per = ((1 << 20) / gb).clamp(1, groups);
        let chunks: Vec<std::sync::Mutex<&mut [u8]>> = bytes
            .chunks_mut(per * gb)
            .map(std::sync::Mutex::new)
            .collect();
        let first_error = std::sync::Mutex::new(None);
        let (src, ty, n_in) = (self.data(), self.ty, self.n_in);
        pool.run_chunked(chunks.len(), 1, |range, _| {
            for c in range {
                // Each chunk is taken by exactly one item: the lock is never contended.
                let mut dst = chunks[c].lock().unwrap_or_else(|p| p.into_inner());
                let n_rows = dst.len() / gb * quant::repack::ROWS;
                let src = &src[c * per * quant::repack::ROWS * rb..][..n_rows * rb];
                if let Err(e) = quant::repack::repack(ty, n_in, n_rows, src, &mut dst) {
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            }
        });
        drop(chunks);
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(ModelError::Kernel(format!("{}: {e}", self.name())));
        }
        self.packed = Some(Arc::new(PackedWeights { ty: pt, bytes }));
        if let Source::File { file, index } = &self.source {
            file.release_pages(&file.tensors()[*index]);
        }
        Ok(total)
    }
}

/// A matrix's weights in a repacked layout, in anonymous memory.
pub struct PackedWeights {
    pub ty: quant::repack::PackedType,
    /// All slabs, each [`quant::repack::PackedType::matrix_bytes`] long (huge-page backed
    /// anonymous memory).
    pub bytes: kernels::matmul::WeightBuffer,
}

/// What [`Weights::repack`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepackSummary {
    /// Tensors repacked.
    pub tensors: usize,
    /// Bytes of repacked weights (anonymous memory).
    pub bytes: usize,
    /// Bytes of the file those tensors were read from.
    pub file_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

impl RepackSummary {
    /// Repacks `m` (see [`Matrix::repack`]) and counts it when it was.
    fn repack(
        &mut self,
        m: &mut Matrix,
        pool: &ThreadPool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ModelError> {
        let n = m.repack(pool)?;
        if n > 0 {
            self.tensors += 1;
            self.bytes += n;
            self.file_bytes += m.bytes() as u64;
            progress(m.bytes() as u64);
        }
        Ok(())
    }
}

/// A callback over the matrices: class, layer, matrix.
type MatrixVisitor<'a> =
    dyn FnMut(WeightClass, Option<usize>, &mut Matrix) -> Result<(), ModelError> + 'a;

/// Calls `f` on the matrices of one layer (attention, then the FFN), with their class and
/// the layer `at`: the trunk's layers and the MTP block's share it.
fn visit_layer(l: &mut Layer, at: Option<usize>, f: &mut MatrixVisitor) -> Result<(), ModelError> {
    match &mut l.attn {
        Attention::Gqa(a) => {
            for m in [&mut a.wq, &mut a.wk, &mut a.wv, &mut a.wo] {
                f(WeightClass::Attention, at, m)?;
            }
        }
        Attention::Mla(a) => {
            if let Some(m) = &mut a.q_a {
                f(WeightClass::Attention, at, m)?;
            }
            for m in [
                &mut a.q,
                &mut a.kv_a,
                &mut a.k_b,
                &mut a.k_b_t,
                &mut a.v_b,
                &mut a.wo,
            ] {
                f(WeightClass::Attention, at, m)?;
            }
            if let Some(ix) = &mut a.indexer {
                for m in [&mut ix.q_b, &mut ix.k, &mut ix.proj] {
                    f(WeightClass::Attention, at, m)?;
                }
            }
        }
    }
    let (dense, class) = match &mut l.ffn {
        Ffn::Dense(d) => (Some(d), WeightClass::DenseFfn),
        Ffn::Moe(moe) => {
            for m in [&mut moe.gate_exps, &mut moe.up_exps, &mut moe.down_exps] {
                f(WeightClass::RoutedExperts, at, m)?;
            }
            (moe.shared.as_mut(), WeightClass::SharedExperts)
        }
    };
    if let Some(d) = dense {
        for m in [&mut d.gate, &mut d.up, &mut d.down] {
            f(class, at, m)?;
        }
    }
    Ok(())
}

/// What [`Weights::page_in`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageInSummary {
    /// File tensors read.
    pub tensors: usize,
    pub bytes: u64,
    pub seconds: f64,
}

impl Weights {
    /// Calls `f` on every matrix the kernels multiply by, with its class and layer, in a
    /// fixed order (the order of [`Self::plan_items`]). `token_embd` (looked up by rows) is
    /// not one, and neither is `output` when it is the tied `token_embd`.
    fn for_each_matrix(&mut self, f: &mut MatrixVisitor) -> Result<(), ModelError> {
        if !self.output.same_tensor(&self.token_embd) {
            f(WeightClass::Output, None, &mut self.output)?;
        }
        for (il, l) in self.layers.iter_mut().enumerate() {
            visit_layer(l, Some(il), f)?;
        }
        Ok(())
    }

    /// The matrices whose `on_device` flag is set (one flag per matrix, in the order of
    /// [`Self::plan_items`]), with their class and layer: what a device tier uploads.
    pub fn selected_matrices(
        &mut self,
        on_device: &[bool],
    ) -> Vec<(WeightClass, Option<usize>, Matrix)> {
        let mut out = Vec::new();
        let mut i = 0;
        let _ = self.for_each_matrix(&mut |class, layer, m| {
            if on_device.get(i).copied().unwrap_or(false) {
                out.push((class, layer, m.clone()));
            }
            i += 1;
            Ok(())
        });
        out
    }

    /// What the memory plan needs to know of every matrix (see [`crate::memplan`]), each
    /// `wanted` (the placement plan keeps some mapped).
    pub fn plan_items(&mut self) -> Vec<PlanItem> {
        let mut items = Vec::new();
        let _ = self.for_each_matrix(&mut |class, layer, m| {
            items.push(PlanItem {
                class,
                layer,
                bytes: m.bytes() as u64,
                packed_bytes: m.packed_bytes() as u64,
                wanted: true,
            });
            Ok(())
        });
        items
    }

    /// Bytes of the weights computed at load (anonymous memory, e.g. `attn_k_b`
    /// transposed).
    pub fn derived_bytes(&mut self) -> u64 {
        let mut n = 0;
        let _ = self.for_each_matrix(&mut |_, _, m| {
            if m.computed_at_load() {
                n += m.bytes() as u64;
            }
            Ok(())
        });
        n
    }

    /// Repacks every matrix whose type has a packed layout (`quant::repack`) and whose rows
    /// come in whole groups into anonymous memory, releasing the mapped pages.
    pub fn repack(&mut self) -> Result<RepackSummary, ModelError> {
        let pool = ThreadPool::new(kernels::default_threads());
        let n = self.plan_items().len();
        self.repack_planned(&pool, &vec![true; n], &mut |_| {})
    }

    /// Repacks the matrices the plan selects (`select[i]` for the i-th of
    /// [`Self::plan_items`]), on the pool, calling `progress(file bytes)` after each.
    pub fn repack_planned(
        &mut self,
        pool: &ThreadPool,
        select: &[bool],
        progress: &mut dyn FnMut(u64),
    ) -> Result<RepackSummary, ModelError> {
        let start = std::time::Instant::now();
        let mut sum = RepackSummary::default();
        let mut i = 0;
        self.for_each_matrix(&mut |_, _, m| {
            let chosen = select.get(i).copied().unwrap_or(false);
            i += 1;
            if !chosen {
                return Ok(());
            }
            sum.repack(m, pool, progress)
        })?;
        sum.seconds = start.elapsed().as_secs_f64();
        Ok(sum)
    }

    /// Repacks the MTP block's matrices like the trunk's (its embedding excepted: that is
    /// looked up by rows), for a command that drafts with it (`--spec-type mtp`): the
    /// block then runs the packed kernels, not the file-order ones. Counted in `sum`
    /// (the trunk's, from [`Self::repack_planned`]). Nothing when the model has no block.
    pub fn repack_nextn(
        &mut self,
        pool: &ThreadPool,
        sum: &mut RepackSummary,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ModelError> {
        let start = std::time::Instant::now();
        self.for_each_nextn_matrix(&mut |_, _, m| sum.repack(m, pool, progress))?;
        sum.seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Calls `f` on every matrix of the MTP block the kernels multiply by (its layer
    /// numbered after the trunk's); nothing when there is no block. The block's own
    /// embedding is looked up by rows, so it is not one.
    fn for_each_nextn_matrix(&mut self, f: &mut MatrixVisitor) -> Result<(), ModelError> {
        let at = Some(self.layers.len());
        if let Some(n) = &mut self.nextn {
            f(WeightClass::Attention, at, &mut n.eh_proj)?;
            visit_layer(&mut n.layer, at, f)?;
            if let Some(head) = &mut n.head {
                f(WeightClass::Output, None, head)?;
            }
        }
        Ok(())
    }

    /// Converts the matrices to the types in `targets` (`targets[i]` for the i-th of
    /// [`Self::plan_items`]; `None`: left as is), on the pool. Returns the tensors
    /// converted and their new bytes (anonymous memory).
    pub fn requantize_planned(
        &mut self,
        pool: &ThreadPool,
        targets: &[Option<GgmlType>],
    ) -> Result<(usize, u64), ModelError> {
        let (mut i, mut tensors, mut bytes) = (0, 0, 0u64);
        self.for_each_matrix(&mut |_, _, m| {
            if let Some(to) = targets.get(i).copied().flatten() {
                bytes += m.requantize(to, pool)? as u64;
                tensors += 1;
            }
            i += 1;
            Ok(())
        })?;
        Ok((tensors, bytes))
    }

    /// What the placement plan needs to know of every tensor: first every matrix the
    /// kernels multiply by (in the order of [`Self::plan_items`]), then the file's other
    /// tensors (embeddings looked up by row, norms, routers: read as stored).
    pub fn tensor_infos(&mut self, file: &Gguf) -> Vec<TensorInfo> {
        let mut infos = Vec::new();
        let mut read = std::collections::HashSet::new();
        let _ = self.for_each_matrix(&mut |class, _, m| {
            if let Some(i) = m.file_index() {
                read.insert(i);
            }
            infos.push(TensorInfo {
                name: m.name().to_string(),
                class: Some(class),
                ty: m.ty,
                n_in: m.n_in,
                n_out: m.n_out,
                rows: (m.n_out * m.n_slab) as u64,
                bytes: m.bytes() as u64,
                derived: m.computed_at_load(),
            });
            Ok(())
        });
        for (i, t) in file.tensors().iter().enumerate() {
            if !read.contains(&i) {
                infos.push(TensorInfo {
                    name: t.name.clone(),
                    class: None,
                    ty: t.ty,
                    n_in: t.ne.first().copied().unwrap_or(0) as usize,
                    n_out: t.ne.get(1).copied().unwrap_or(1) as usize,
                    rows: t.ne.iter().skip(1).product(),
                    bytes: t.size,
                    derived: false,
                });
            }
        }
        infos
    }

    /// Per matrix (in the order of [`Self::plan_items`]): its type, whether it is
    /// repacked, and whether its type and shape have a repacked layout.
    pub fn storage_outcome(&mut self) -> Vec<(GgmlType, bool, bool)> {
        let mut out = Vec::new();
        let _ = self.for_each_matrix(&mut |_, _, m| {
            out.push((m.ty, m.is_packed(), m.is_packed() || m.packed_bytes() > 0));
            Ok(())
        });
        out
    }

    /// Indices of the file tensors some matrix reads through a repacked or converted
    /// copy (their mapped pages were released).
    pub fn replaced_file_tensors(&mut self) -> std::collections::HashSet<usize> {
        let mut set = std::collections::HashSet::new();
        let mut add = |_: WeightClass, _: Option<usize>, m: &mut Matrix| {
            if let (true, Some(i)) = (m.is_packed() || m.computed_at_load(), m.file_index()) {
                set.insert(i);
            }
            Ok(())
        };
        let _ = self.for_each_matrix(&mut add);
        let _ = self.for_each_nextn_matrix(&mut add);
        set
    }

    /// Reads the file tensors in `indices` once, one page in each 4 KiB, split across the
    /// pool (so that cold pages come from the storage in parallel, and the first tokens
    /// do not wait for page faults); `progress(bytes)` after each tensor.
    pub fn page_in(
        file: &Gguf,
        indices: &[usize],
        pool: &ThreadPool,
        progress: &mut dyn FnMut(u64),
    ) -> PageInSummary {
        const PAGE: usize = 4096;
        const CHUNK: usize = 1 << 20;
        let start = std::time::Instant::now();
        let mut sum = PageInSummary::default();
        for &i in indices {
            let Some(info) = file.tensors().get(i) else {
                continue;
            };
            let data = file.view(info).data;
            let touched = std::sync::atomic::AtomicU64::new(0);
            pool.run_chunked(data.len().div_ceil(CHUNK), 1, |range, _| {
                let mut acc = 0u64;
                for c in range {
                    let chunk = &data[c * CHUNK..data.len().min((c + 1) * CHUNK)];
                    for b in chunk.iter().step_by(PAGE) {
                        acc = acc.wrapping_add(*b as u64);
                    }
                }
                // Keeps the reads from being optimised away.
                touched.fetch_add(
                    std::hint::black_box(acc),
                    std::sync::atomic::Ordering::Relaxed,
                );
            });
            sum.tensors += 1;
            sum.bytes += info.size;
            progress(info.size);
        }
        sum.seconds = start.elapsed().as_secs_f64();
        sum
    }
}

/// Binds tensors of one file by name, checking shapes and types.
pub struct Binder<'a> {
    pub file: &'a Arc<Gguf>,
}

impl Binder<'_> {
    fn bad(&self, name: &str, problem: String) -> ModelError {
        ModelError::BadTensor {
            file: self.file.name().to_string(),
            name: name.to_string(),
            problem,
        }
    }

    /// Whether the file has a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.file.get_tensor(name).is_some()
    }

    /// A matrix with `ne = [n_in, n_out]` (or `[n_in, n_out, n_slab]` through [`Self::stack`]).
    pub fn matrix(&self, name: &str, n_in: usize, n_out: usize) -> Result<Matrix, ModelError> {
        self.stack_opt_slab(name, n_in, n_out, None)
    }

    /// A stack of `n_slab` matrices, `ne = [n_in, n_out, n_slab]`.
    pub fn stack(
        &self,
        name: &str,
        n_in: usize,
        n_out: usize,
        n_slab: usize,
    ) -> Result<Matrix, ModelError> {
        self.stack_opt_slab(name, n_in, n_out, Some(n_slab))
    }

    /// [`Self::matrix`], or `None` when the tensor is absent.
    pub fn opt_matrix(
        &self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Option<Matrix>, ModelError> {
        if self.has(name) {
            self.matrix(name, n_in, n_out).map(Some)
        } else {
            Ok(None)
        }
    }

    fn stack_opt_slab(
        &self,
        name: &str,
        n_in: usize,
        n_out: usize,
        n_slab: Option<usize>,
    ) -> Result<Matrix, ModelError> {
        let index = self
            .file
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| gguf::GgufError::MissingTensor {
                file: self.file.name().to_string(),
                name: name.to_string(),
            })?;
        let info = &self.file.tensors()[index];
        let want: Vec<u64> = match n_slab {
            None => vec![n_in as u64, n_out as u64],
            Some(s) => vec![n_in as u64, n_out as u64, s as u64],
        };
        // A trailing dimension of 1 is the same shape.
        let mut got = info.ne.clone();
        while got.len() > want.len() && got.last() == Some(&1) {
            got.pop();
        }
        if got != want {
            return Err(self.bad(
                name,
                format!("shape (ne) is {:?}, expected {want:?}", info.ne),
            ));
        }
        if !quant::is_supported(info.ty) {
            return Err(self.bad(name, quant::unsupported(info.ty).to_string()));
        }
        Ok(Matrix {
            source: Source::File {
                file: self.file.clone(),
                index,
            },
            packed: None,
            ty: info.ty,
            n_in,
            n_out,
            n_slab: n_slab.unwrap_or(1),
        })
    }

    /// A vector of `len` values (norm weights, biases, router bias), dequantized to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.file.tensor(name)?;
        if t.n_elements() != len as u64 || t.ne[1..].iter().any(|&d| d != 1) {
            return Err(self.bad(name, format!("shape (ne) is {:?}, expected [{len}]", t.ne)));
        }
        let mut v = vec![0f32; len];
        quant::dequantize(t.ty, t.data, &mut v).map_err(|e| self.bad(name, e.to_string()))?;
        Ok(v)
    }

    /// A small tensor of exactly `ne` (e.g. per-expert biases, `[width, n_expert]`),
    /// dequantized to f32 in file order.
    pub fn array(&self, name: &str, ne: &[usize]) -> Result<Vec<f32>, ModelError> {
        let t = self.file.tensor(name)?;
        let mut got: Vec<u64> = t.ne.to_vec();
        while got.len() > ne.len() && got.last() == Some(&1) {
            got.pop();
        }
        if got.iter().map(|&d| d as usize).ne(ne.iter().copied()) {
            return Err(self.bad(name, format!("shape (ne) is {:?}, expected {ne:?}", t.ne)));
        }
        let mut v = vec![0f32; ne.iter().product()];
        quant::dequantize(t.ty, t.data, &mut v).map_err(|e| self.bad(name, e.to_string()))?;
        Ok(v)
    }

    /// [`Self::vector`], or `None` when the tensor is absent.
    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        if self.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Grouped-query attention (Llama, Qwen2, Qwen2-MoE, Qwen3-MoE, gpt-oss).
pub struct GqaWeights {
    /// Output projection bias (gpt-oss), length `dim`.
    pub bo: Option<Vec<f32>>,
    /// Attention sinks (gpt-oss): one logit per query head joining its softmax.
    pub sinks: Option<Vec<f32>>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of q and k (Qwen3), length `head_dim`.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

/// DeepSeek multi-head latent attention, in the absorbed form: the cache holds the
/// normalised latent `c_kv` and the rotated shared key `k_pe` per position.
pub struct MlaWeights {
    /// Query path: either `attn_q` (`q_a` is `None`) or `attn_q_a` → norm → `attn_q_b`.
    pub q_a: Option<Matrix>,
    pub q_a_norm: Option<Vec<f32>>,
    /// `attn_q` or `attn_q_b`: `dim` (or q_lora) → `n_head · (qk_nope + qk_rope)`.
    pub q: Matrix,
    /// `attn_kv_a_mqa`: `dim` → `kv_lora + qk_rope`.
    pub kv_a: Matrix,
    pub kv_a_norm: Vec<f32>,
    /// Per head: `qk_nope` → `kv_lora` (`attn_k_b`, ne `[qk_nope, kv_lora, n_head]`).
    pub k_b: Matrix,
    /// `attn_k_b` transposed and stacked: `kv_lora` → `n_head · qk_nope`, so that one
    /// matmul decompresses cached latents into every head's no-RoPE key (the decompressed
    /// form of MLA, used for long prompts). Q8_0, computed at load.
    pub k_b_t: Matrix,
    /// Per head: `kv_lora` → `v_head` (`attn_v_b`, ne `[kv_lora, v_head, n_head]`).
    pub v_b: Matrix,
    pub wo: Matrix,
    /// DeepSeek-V3.2's lightning indexer (`None`: dense MLA; boxed, as most models have
    /// none).
    pub indexer: Option<Box<IndexerWeights>>,
}

/// The lightning indexer of one layer (DeepSeek-V3.2, `blk.N.indexer.*`).
pub struct IndexerWeights {
    /// `indexer.attn_q_b`: the normalised compressed query (q_lora) → `n_head · head_dim`.
    pub q_b: Matrix,
    /// `indexer.attn_k`: `dim` → the shared key (`head_dim`), then a LayerNorm with
    /// weight and bias (`indexer.k_norm`).
    pub k: Matrix,
    pub k_norm: Vec<f32>,
    pub k_norm_bias: Vec<f32>,
    /// `indexer.proj`: `dim` → one weight per indexer head.
    pub proj: Matrix,
}

/// The attention block of one layer.
pub enum Attention {
    Gqa(GqaWeights),
    Mla(MlaWeights),
}

/// A SiLU-gated FFN: `down(silu(gate·x) * (up·x))`.
pub struct DenseFfn {
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
}

/// Per-expert biases of the routed experts (gpt-oss): `gate`/`up` are
/// `n_expert × expert_ffn`, `down` is `n_expert × dim` (ne `[width, n_expert]`).
pub struct ExpertBiasWeights {
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
}

/// A mixture-of-experts FFN.
pub struct MoeFfn {
    /// Router bias (gpt-oss), added to the router logits.
    pub router_bias: Option<Vec<f32>>,
    /// Biases of the expert products (gpt-oss).
    pub expert_bias: Option<ExpertBiasWeights>,
    /// Router, `dim` → `n_expert` (F32 in every file we have seen).
    pub router: Matrix,
    /// DeepSeek-V3's selection bias (`exp_probs_b`), added to the scores for choosing only.
    pub selection_bias: Option<Vec<f32>>,
    /// Expert stacks, ne `[dim, expert_ffn, n_expert]` / `[expert_ffn, dim, n_expert]`.
    pub gate_exps: Matrix,
    pub up_exps: Matrix,
    pub down_exps: Matrix,
    /// Shared expert(s), fused into one FFN.
    pub shared: Option<DenseFfn>,
    /// Qwen2-MoE: the shared expert's output is scaled by sigmoid(shared_gate · x).
    pub shared_gate: Option<Vec<f32>>,
}

/// The FFN block of one layer.
// One per layer: boxing the larger variant would save nothing that matters.
#[allow(clippy::large_enum_variant)]
pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

/// One transformer block.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub attn: Attention,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
}

/// Every weight of a model.
pub struct Weights {
    /// `token_embd`, ne `[dim, n_vocab]`: rows are looked up, not multiplied.
    pub token_embd: Matrix,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    /// `output` (or `token_embd` when the embeddings are tied).
    pub output: Matrix,
    /// The first next-token-prediction (MTP) block, when the file carries one and it
    /// bound (see [`crate::Model::nextn`]); only speculative decoding runs it.
    pub nextn: Option<NextnWeights>,
}

/// A next-token-prediction (MTP) block (DeepSeek-V3's and GLM-4.5's `nextn` layers,
/// `blk.{n_layer}.*`): from the trunk's normalised output `h` at position `p` and the
/// embedding `e` of the token at `p + 1`, the input `eh_proj · [enorm(e); hnorm(h)]` runs
/// through a block like a trunk layer, and `head(head_norm(x))` predicts the token at
/// `p + 2`.
pub struct NextnWeights {
    /// The block's attention and FFN, bound as a trunk layer's.
    pub layer: Layer,
    /// `nextn.eh_proj`: `2 · dim` (the normalised embedding, then the normalised hidden
    /// state) → `dim`.
    pub eh_proj: Matrix,
    /// `nextn.enorm`, `nextn.hnorm`: RMSNorm weights of the embedding and of the hidden
    /// state.
    pub enorm: Vec<f32>,
    pub hnorm: Vec<f32>,
    /// `nextn.shared_head_norm`: the block's final RMSNorm.
    pub head_norm: Vec<f32>,
    /// `nextn.shared_head_head` and `nextn.embed_tokens`, when the file has its own
    /// (GLM-4.6 and the converted DeepSeek files share the trunk's: `None`).
    pub head: Option<Matrix>,
    pub embed: Option<Matrix>,
}

impl Binder<'_> {
    /// The SiLU-gated dense FFN `blk.{il}.ffn_{gate,up,down}{suffix}`.
    pub fn dense_ffn(
        &self,
        il: usize,
        suffix: &str,
        dim: usize,
        hidden: usize,
    ) -> Result<DenseFfn, ModelError> {
        Ok(DenseFfn {
            gate: self.matrix(&format!("blk.{il}.ffn_gate{suffix}.weight"), dim, hidden)?,
            up: self.matrix(&format!("blk.{il}.ffn_up{suffix}.weight"), dim, hidden)?,
            down: self.matrix(&format!("blk.{il}.ffn_down{suffix}.weight"), hidden, dim)?,
        })
    }

    /// The next-token-prediction block `blk.{il}` around its already bound `layer`.
    pub fn nextn(
        &self,
        il: usize,
        dim: usize,
        n_vocab: usize,
        layer: Layer,
    ) -> Result<NextnWeights, ModelError> {
        let p = |n: &str| format!("blk.{il}.nextn.{n}");
        Ok(NextnWeights {
            layer,
            eh_proj: self.matrix(&p("eh_proj.weight"), 2 * dim, dim)?,
            enorm: self.vector(&p("enorm.weight"), dim)?,
            hnorm: self.vector(&p("hnorm.weight"), dim)?,
            head_norm: self.vector(&p("shared_head_norm.weight"), dim)?,
            head: self.opt_matrix(&p("shared_head_head.weight"), dim, n_vocab)?,
            embed: self.opt_matrix(&p("embed_tokens.weight"), dim, n_vocab)?,
        })
    }

    /// `token_embd`, `output_norm` and `output` (falling back to `token_embd` when tied).
    pub fn embeddings(
        &self,
        dim: usize,
        n_vocab: usize,
    ) -> Result<(Matrix, Vec<f32>, Matrix), ModelError> {
        let token_embd = self.matrix("token_embd.weight", dim, n_vocab)?;
        let output_norm = self.vector("output_norm.weight", dim)?;
        let output = match self.opt_matrix("output.weight", dim, n_vocab)? {
            Some(m) => m,
            None => token_embd.clone(),
        };
        Ok((token_embd, output_norm, output))
    }
}
