//! The GGUF container: read (memory-mapped, zero-copy tensor views) and write.
//!
//! ```no_run
//! let file = gguf::Gguf::open("model.gguf")?;
//! let experts = file.metadata().u32("deepseek2.expert_count")?;
//! let embd = file.tensor("token_embd.weight")?;
//! println!("{experts} experts, token_embd is {} {:?}", embd.ty, embd.ne);
//! # Ok::<(), gguf::GgufError>(())
//! ```
//!
//! Every count, length, offset and shape in the file is validated before use: a
//! malformed file gives a [`GgufError`] naming the problem, never a panic or a huge
//! allocation.

// `is_multiple_of` is newer than our MSRV (1.85).
#![allow(clippy::manual_is_multiple_of)]

mod error;
mod reader;
mod split;
pub mod types;
mod value;
mod writer;

use std::path::Path;

pub use error::GgufError;
pub use reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
pub use split::{split_path, SplitWriter, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT};
pub use types::{file_type_name, GgmlType, ALL_TYPES};
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::{write_file, GgufWriter, TensorSpec};

/// Where a tensor lives in the file and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Element/block type.
    pub ty: GgmlType,
    /// Shape in ggml order: `ne[0]` is the row length (the contiguous axis).
    pub ne: Vec<u64>,
    /// Offset of the data from the start of its part's data section.
    pub offset: u64,
    /// Which part of a split set holds the data (0 for a single file).
    pub part: usize,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// A zero-copy view of one tensor's data.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub ne: &'a [u64],
    pub data: &'a [u8],
}

impl Tensor<'_> {
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
    /// Row length (`ne[0]`).
    pub fn row_len(&self) -> usize {
        self.ne[0] as usize
    }
    /// Number of rows (product of `ne[1..]`).
    pub fn n_rows(&self) -> usize {
        self.ne[1..].iter().product::<u64>() as usize
    }
    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        // Validated at parse time: the row length is a whole number of blocks.
        self.ty.row_bytes(self.ne[0]).unwrap_or(0) as usize
    }
}

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One file of a model: a whole single-file model, or one part of a split set.
pub struct Part {
    name: String,
    backing: Backing,
    data_offset: u64,
    tensor_count: usize,
}

impl Part {
    /// The path the part was opened under.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.backing.bytes().len() as u64
    }
    /// Tensors whose data this part holds.
    pub fn tensor_count(&self) -> usize {
        self.tensor_count
    }
    /// Absolute offset of the part's data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
    /// Bytes of tensor data (the file minus its header).
    pub fn data_bytes(&self) -> u64 {
        self.file_size().saturating_sub(self.data_offset)
    }
}

/// A parsed GGUF model, its bytes memory-mapped (or owned): one file, or every part of a
/// split set (llama.cpp's `gguf-split`: the first part holds the metadata, each part a
/// share of the tensors), which then reads as one file.
pub struct Gguf {
    name: String,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: std::collections::HashMap<String, usize>,
    alignment: u64,
    parts: Vec<Part>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl Gguf {
    /// Opens and validates a file, mapping it into memory. A part of a split set
    /// (`NAME-00002-of-00009.gguf`, any part) opens the whole set: every part is mapped and
    /// the set validated (see [`GgufError::Split`]) before anything is returned.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref();
        let (first, parsed) = open_part(path)?;
        match split::SplitKeys::read(&parsed.metadata, first.name())? {
            Some(keys) if keys.count > 1 => split::open_set(path, first, parsed, keys),
            _ => Ok(Self::assemble(vec![(first, parsed)])),
        }
    }

    /// Parses a file held in memory (`name` is used in error messages).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Gguf, GgufError> {
        let backing = Backing::Owned(bytes);
        let parsed = reader::parse(backing.bytes(), name)?;
        Ok(Self::assemble(vec![(
            Part::new(name.to_string(), backing, &parsed),
            parsed,
        )]))
    }

    /// One model from its validated parts, in order: the metadata, version and alignment of
    /// the first, the tensors of all (each remembering its part).
    fn assemble(parts: Vec<(Part, reader::Parsed)>) -> Gguf {
        let mut tensors = Vec::new();
        let mut out_parts = Vec::with_capacity(parts.len());
        let mut head = None;
        for (i, (part, parsed)) in parts.into_iter().enumerate() {
            tensors.extend(
                parsed
                    .tensors
                    .into_iter()
                    .map(|t| TensorInfo { part: i, ..t }),
            );
            if head.is_none() {
                head = Some((parsed.version, parsed.metadata, parsed.alignment));
            }
            out_parts.push(part);
        }
        let (version, metadata, alignment) = head.expect("at least one part");
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Gguf {
            name: out_parts[0].name.clone(),
            version,
            metadata,
            tensors,
            index,
            alignment,
            parts: out_parts,
        }
    }

    /// The path or name of the file (of a split set: its first part).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }
    /// All metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// Tensor infos in file order (of a split set: part after part).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    /// Alignment of the data section and the tensors (of the first part).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Absolute offset of the data section (of the first part).
    pub fn data_offset(&self) -> u64 {
        self.parts[0].data_offset
    }
    /// Total size in bytes (of a split set: all parts).
    pub fn file_size(&self) -> u64 {
        self.parts.iter().map(Part::file_size).sum()
    }
    /// The files the model was read from: one, or every part of a split set in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
    /// Whether the bytes are memory-mapped (as opposed to an owned buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(self.parts[0].backing, Backing::Mapped(_))
    }
    /// The architecture named by `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata.str("general.architecture")
    }

    /// The tensor with this name, or `None`.
    pub fn get_tensor(&self, name: &str) -> Option<Tensor<'_>> {
        let info = &self.tensors[*self.index.get(name)?];
        Some(self.view(info))
    }

    /// The tensor with this name, or an error naming it and the file.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>, GgufError> {
        self.get_tensor(name)
            .ok_or_else(|| GgufError::MissingTensor {
                file: self.name.clone(),
                name: name.to_string(),
            })
    }

    /// A view of a tensor described by one of this file's infos.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> Tensor<'a> {
        // Validated at parse time: offset + size lies within the part's data section.
        let part = &self.parts[info.part];
        let start = (part.data_offset + info.offset) as usize;
        let data = &part.backing.bytes()[start..start + info.size as usize];
        Tensor {
            name: &info.name,
            ty: info.ty,
            ne: &info.ne,
            data,
        }
    }

    /// Advises the OS that the given tensor's pages are no longer needed (after a repack);
    /// no-op for owned buffers. Errors are ignored: this is only a hint.
    pub fn release_pages(&self, info: &TensorInfo) {
        let part = &self.parts[info.part];
        if let Backing::Mapped(m) = &part.backing {
            let page = 4096u64;
            let start = (part.data_offset + info.offset).div_ceil(page) * page;
            let end = (part.data_offset + info.offset + info.size) / page * page;
            if end > start {
                // SAFETY: DontNeed on a private read-only file mapping only drops cached
                // pages; later reads fault them back in from the file unchanged.
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start as usize,
                        (end - start) as usize,
                    )
                };
            }
        }
    }
}

impl Part {
    fn new(name: String, backing: Backing, parsed: &reader::Parsed) -> Part {
        Part {
            name,
            backing,
            data_offset: parsed.data_offset,
            tensor_count: parsed.tensors.len(),
        }
    }
}

/// Maps and parses one file (a whole model or one part of a set).
fn open_part(path: &Path) -> Result<(Part, reader::Parsed), GgufError> {
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let name = path.display().to_string();
    if len == 0 {
        return Err(GgufError::malformed(&name, "the file is empty"));
    }
    // SAFETY: the mapping is read-only and private to this process. Like every
    // mmap-based loader (llama.cpp included) we rely on the file not being truncated or
    // rewritten while it is open; all bounds were checked against the length mapped.
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(io)?;
    let backing = Backing::Mapped(map);
    let parsed = reader::parse(backing.bytes(), &name)?;
    Ok((Part::new(name, backing, &parsed), parsed))
}
