//! Split sets, as llama.cpp's `gguf-split` writes them: `NAME-00001-of-00003.gguf`,
//! `NAME-00002-of-00003.gguf`, … Every part is a complete GGUF file; the first holds the
//! model's metadata, every part a share of the tensors, and every part the keys
//! `split.no` (0-based), `split.count` and `split.tensors.count` (tensors in the whole set).
//!
//! A set opens from any of its parts. Before it is used it is validated: every part
//! present, the same `split.count` and `split.tensors.count` throughout, each part where
//! its `split.no` says, no tensor twice, and as many tensors as `split.tensors.count`.
//! A bad set is refused with the name of the part that is missing or wrong.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::reader::{tensor_size, Parsed, DEFAULT_ALIGNMENT};
use crate::value::{Metadata, Value};
use crate::{open_part, Gguf, GgufError, GgufWriter, Part, TensorSpec};

/// Index of this part in its set, from 0 (u16).
pub const SPLIT_NO: &str = "split.no";
/// Parts in the set (u16).
pub const SPLIT_COUNT: &str = "split.count";
/// Tensors in the whole set (i32).
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// The path of part `no` (0-based) of a `count`-part set: `PREFIX-00001-of-00009.gguf`, as
/// llama.cpp names them (`llama_split_path`).
pub fn split_path(prefix: &str, no: usize, count: usize) -> String {
    format!("{prefix}-{:05}-of-{count:05}.gguf", no + 1)
}

/// The `split.*` keys of one part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitKeys {
    pub no: usize,
    pub count: usize,
    /// `split.tensors.count`, when present (llama.cpp always writes it).
    pub tensors: Option<u64>,
}

impl SplitKeys {
    /// The keys of a part, or `None` for a file that is not part of a set.
    pub fn read(md: &Metadata, file: &str) -> Result<Option<SplitKeys>, GgufError> {
        let Some(count) = md.opt_u64(SPLIT_COUNT)? else {
            return Ok(None);
        };
        let no = md.opt_u64(SPLIT_NO)?.unwrap_or(0);
        let count = count as usize;
        if count == 0 || no as usize >= count {
            return Err(GgufError::Split {
                file: file.to_string(),
                problem: format!("split.no {no} is not a part of a {count}-part set"),
            });
        }
        Ok(Some(SplitKeys {
            no: no as usize,
            count,
            tensors: md.opt_u64(SPLIT_TENSORS_COUNT)?,
        }))
    }
}

fn split_err(file: impl Into<String>, problem: impl Into<String>) -> GgufError {
    GgufError::Split {
        file: file.into(),
        problem: problem.into(),
    }
}

/// Opens the rest of the set that `path` (part `keys.no`, already parsed) belongs to,
/// validates it and assembles one model.
pub(crate) fn open_set(
    path: &Path,
    given: Part,
    parsed: Parsed,
    keys: SplitKeys,
) -> Result<Gguf, GgufError> {
    let shown = path.display().to_string();
    let suffix = format!("-{:05}-of-{:05}.gguf", keys.no + 1, keys.count);
    let prefix = shown.strip_suffix(&suffix).ok_or_else(|| {
        split_err(
            &shown,
            format!(
                "this is part {} of a {}-part split set, but its name does not end in '{suffix}', so the other parts cannot be found (keep the names llama-gguf-split gave them)",
                keys.no + 1,
                keys.count
            ),
        )
    })?;
    let mut given = Some((given, parsed));
    let mut parts = Vec::with_capacity(keys.count);
    for i in 0..keys.count {
        let (part, parsed) = if i == keys.no {
            given.take().expect("the given part is used once")
        } else {
            let p = split_path(prefix, i, keys.count);
            if !Path::new(&p).exists() {
                return Err(split_err(
                    &p,
                    format!(
                        "part {} of the {}-part split set is missing (the set was opened from {shown})",
                        i + 1,
                        keys.count
                    ),
                ));
            }
            open_part(Path::new(&p))?
        };
        check_part(&part, &parsed, i, keys)?;
        parts.push((part, parsed));
    }
    check_tensors(&parts, keys)?;
    Ok(Gguf::assemble(parts))
}

/// Checks that part `i` belongs to the set described by `keys` (those of the part it was
/// opened from).
fn check_part(part: &Part, parsed: &Parsed, i: usize, keys: SplitKeys) -> Result<(), GgufError> {
    let name = part.name();
    let Some(k) = SplitKeys::read(&parsed.metadata, name)? else {
        return Err(split_err(
            name,
            format!(
                "has no split.count key: it is a standalone GGUF file, not part {} of the {}-part set",
                i + 1,
                keys.count
            ),
        ));
    };
    if k.count != keys.count {
        return Err(split_err(
            name,
            format!(
                "belongs to a {}-part set, not to this {}-part set (a part of another set?)",
                k.count, keys.count
            ),
        ));
    }
    if k.no != i {
        return Err(split_err(
            name,
            format!(
                "says it is part {} (split.no {}), but its name makes it part {}",
                k.no + 1,
                k.no,
                i + 1
            ),
        ));
    }
    if k.tensors != keys.tensors {
        let show = |t: Option<u64>| t.map_or("no".to_string(), |n| n.to_string());
        return Err(split_err(
            name,
            format!(
                "belongs to a set of {} tensors, not to this set of {} (a part of another set?)",
                show(k.tensors),
                show(keys.tensors)
            ),
        ));
    }
    if i == 0 && !parsed.metadata.contains("general.architecture") {
        return Err(split_err(
            name,
            "the first part of a set must hold the model's metadata, and this one has no general.architecture",
        ));
    }
    Ok(())
}

/// No tensor in two parts, and as many tensors as `split.tensors.count`.
fn check_tensors(parts: &[(Part, Parsed)], keys: SplitKeys) -> Result<(), GgufError> {
    let mut seen = std::collections::HashMap::new();
    for (i, (part, parsed)) in parts.iter().enumerate() {
        for t in &parsed.tensors {
            if let Some(&j) = seen.get(t.name.as_str()) {
                let (other, _): &(Part, Parsed) = &parts[j];
                return Err(split_err(
                    part.name(),
                    format!(
                        "tensor '{}' is also in part {} ({}): the parts come from different sets",
                        t.name,
                        j + 1,
                        other.name()
                    ),
                ));
            }
            seen.insert(t.name.as_str(), i);
        }
    }
    let total = seen.len() as u64;
    match keys.tensors {
        Some(n) if n != total => Err(split_err(
            parts[0].0.name(),
            format!(
                "the {} parts hold {total} tensors, but split.tensors.count says the set has {n}",
                parts.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Writes a split set the way `llama-gguf-split --split --split-max-size` does: tensors in
/// order, a new part whenever the next tensor (its size padded to 32 bytes) would take the
/// current part's tensor data over the limit; a tensor larger than the limit gets a part
/// of its own. The first part carries the metadata, every part the `split.*` keys.
///
/// Like [`GgufWriter`]: `write_tensor` once per tensor in the order given, `finish` last.
pub struct SplitWriter {
    paths: Vec<PathBuf>,
    parts: Vec<Vec<TensorSpec>>,
    metadata: Metadata,
    n_tensors: usize,
    current: Option<GgufWriter<BufWriter<std::fs::File>>>,
    /// Index of the part being written (valid when `current` is `Some`).
    part: usize,
    written: usize,
}

impl SplitWriter {
    /// Plans the parts. `out` names the set: `model.gguf` (or `model`) gives
    /// `model-00001-of-0000N.gguf`, …
    pub fn create(
        out: &Path,
        metadata: &Metadata,
        tensors: Vec<TensorSpec>,
        max_part_bytes: u64,
    ) -> Result<SplitWriter, GgufError> {
        if max_part_bytes == 0 {
            return Err(GgufError::Write(
                "the maximum part size must be positive".into(),
            ));
        }
        let mut parts: Vec<Vec<TensorSpec>> = vec![Vec::new()];
        let mut bytes = 0u64;
        let n_tensors = tensors.len();
        for spec in tensors {
            let size = tensor_size(&spec.name, spec.ty, &spec.ne).map_err(GgufError::Write)?;
            let padded = size.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
            let current = parts.last_mut().expect("one part at least");
            if !current.is_empty() && bytes + padded > max_part_bytes {
                parts.push(vec![spec]);
                bytes = padded;
            } else {
                current.push(spec);
                bytes += padded;
            }
        }
        if parts.len() > u16::MAX as usize || n_tensors > i32::MAX as usize {
            return Err(GgufError::Write(format!(
                "{} parts of {n_tensors} tensors do not fit the split.* keys (u16 parts, i32 tensors)",
                parts.len()
            )));
        }
        let shown = out.display().to_string();
        let prefix = shown.strip_suffix(".gguf").unwrap_or(&shown);
        let paths = (0..parts.len())
            .map(|i| PathBuf::from(split_path(prefix, i, parts.len())))
            .collect();
        Ok(SplitWriter {
            paths,
            parts,
            metadata: metadata.clone(),
            n_tensors,
            current: None,
            part: 0,
            written: 0,
        })
    }

    /// The parts' paths, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The tensors planned into each part, in order.
    pub fn plan(&self) -> &[Vec<TensorSpec>] {
        &self.parts
    }

    /// Starts part `i`: its file, header, metadata and tensor table.
    fn start_part(&mut self, i: usize) -> Result<(), GgufError> {
        let mut md = if i == 0 {
            self.metadata.clone()
        } else {
            Metadata::new(&self.paths[i].display().to_string())
        };
        // In gguf-split's order (its `split.count` is set last), so that our parts are
        // byte-identical to the ones it cuts from the same file.
        md.set(SPLIT_NO, Value::U16(i as u16));
        md.set(SPLIT_TENSORS_COUNT, Value::I32(self.n_tensors as i32));
        md.set(SPLIT_COUNT, Value::U16(self.parts.len() as u16));
        let path = &self.paths[i];
        let file = std::fs::File::create(path).map_err(|source| GgufError::Io {
            path: path.clone(),
            source,
        })?;
        self.current = Some(GgufWriter::new(
            BufWriter::with_capacity(8 << 20, file),
            &md,
            self.parts[i].clone(),
        )?);
        self.part = i;
        self.written = 0;
        Ok(())
    }

    /// Ends the part being written (if any).
    fn end_part(&mut self) -> Result<(), GgufError> {
        if let Some(w) = self.current.take() {
            w.finish()?;
        }
        Ok(())
    }

    /// Writes the next tensor's data (see [`GgufWriter::write_tensor`]).
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        match &self.current {
            None => self.start_part(0)?,
            Some(_) if self.written == self.parts[self.part].len() => {
                let next = self.part + 1;
                if next == self.parts.len() {
                    return Err(GgufError::Write(format!(
                        "tensor '{name}' written but all tensors are already written"
                    )));
                }
                self.end_part()?;
                self.start_part(next)?;
            }
            Some(_) => {}
        }
        let w = self.current.as_mut().expect("a part is open");
        w.write_tensor(name, data)?;
        self.written += 1;
        Ok(())
    }

    /// Checks every tensor was written, ends the last part and returns the parts' paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, GgufError> {
        if self.current.is_none() {
            // Nothing written: only a set without tensors is complete.
            self.start_part(0)?;
        }
        let last = self.parts.len() - 1;
        if self.part != last || self.written != self.parts[last].len() {
            let missing = self.parts[self.part..]
                .iter()
                .flatten()
                .nth(self.written)
                .map_or("?", |s| s.name.as_str());
            return Err(GgufError::Write(format!(
                "tensor '{missing}' was never written"
            )));
        }
        self.end_part()?;
        Ok(self.paths)
    }
}
