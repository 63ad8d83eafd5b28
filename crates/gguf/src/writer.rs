//! Writing GGUF v3 files that llama.cpp loads: header, metadata, tensor table, then the
//! tensor data streamed one tensor at a time (so a model never has to be held in RAM).

use std::io::Write;

use crate::reader::{tensor_size, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use crate::value::{Array, Metadata, Value};
use crate::{GgmlType, GgufError};

/// A tensor to be written: name, type and ggml shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
}

struct Planned {
    spec: TensorSpec,
    offset: u64,
    size: u64,
}

/// Streams a GGUF file: `new` writes everything up to the data section, then
/// `write_tensor` must be called once per tensor, in the order given, and `finish` last.
pub struct GgufWriter<W: Write> {
    out: W,
    planned: Vec<Planned>,
    next: usize,
    position: u64,
    alignment: u64,
}

fn werr(msg: impl Into<String>) -> GgufError {
    GgufError::Write(msg.into())
}

fn io_err(e: std::io::Error) -> GgufError {
    werr(format!("write failed: {e}"))
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header, `metadata` (in its order) and the tensor table.
    pub fn new(
        mut out: W,
        metadata: &Metadata,
        tensors: Vec<TensorSpec>,
    ) -> Result<Self, GgufError> {
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
            Some(_) => {
                return Err(werr(
                    "general.alignment must be a non-zero power-of-two u32",
                ))
            }
        };
        let mut planned = Vec::with_capacity(tensors.len());
        let mut names = std::collections::HashSet::new();
        let mut offset = 0u64;
        for spec in tensors {
            if spec.ne.is_empty() || spec.ne.len() > MAX_DIMS {
                return Err(werr(format!(
                    "tensor '{}' must have 1..={MAX_DIMS} dimensions",
                    spec.name
                )));
            }
            if !names.insert(spec.name.clone()) {
                return Err(werr(format!("duplicate tensor name '{}'", spec.name)));
            }
            let size = tensor_size(&spec.name, spec.ty, &spec.ne).map_err(werr)?;
            planned.push(Planned { spec, offset, size });
            offset = (offset + size).div_ceil(alignment) * alignment;
        }

        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(planned.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            put_str(&mut head, key);
            head.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut head, value);
        }
        for p in &planned {
            put_str(&mut head, &p.spec.name);
            head.extend_from_slice(&(p.spec.ne.len() as u32).to_le_bytes());
            for &d in &p.spec.ne {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&p.spec.ty.id().to_le_bytes());
            head.extend_from_slice(&p.offset.to_le_bytes());
        }
        let padded = (head.len() as u64).div_ceil(alignment) * alignment;
        head.resize(padded as usize, 0);
        out.write_all(&head).map_err(io_err)?;
        Ok(GgufWriter {
            out,
            planned,
            next: 0,
            position: 0,
            alignment,
        })
    }

    /// Writes the next tensor's data; `name` must be the next tensor in table order and
    /// `data` exactly its size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let p = self.planned.get(self.next).ok_or_else(|| {
            werr(format!(
                "tensor '{name}' written but all tensors are already written"
            ))
        })?;
        if p.spec.name != name {
            return Err(werr(format!(
                "expected data for tensor '{}', got '{name}'",
                p.spec.name
            )));
        }
        if data.len() as u64 != p.size {
            return Err(werr(format!(
                "tensor '{name}' needs {} bytes, got {}",
                p.size,
                data.len()
            )));
        }
        let pad = p.offset - self.position;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(io_err)?;
        self.out.write_all(data).map_err(io_err)?;
        self.position = p.offset + p.size;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written, pads the end and returns the output.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(p) = self.planned.get(self.next) {
            return Err(werr(format!("tensor '{}' was never written", p.spec.name)));
        }
        let end = self.position.div_ceil(self.alignment) * self.alignment;
        self.out
            .write_all(&vec![0u8; (end - self.position) as usize])
            .map_err(io_err)?;
        self.out.flush().map_err(io_err)?;
        Ok(self.out)
    }
}

/// Writes a whole file to `path` in one call (tensors given with their data).
pub fn write_file(
    path: &std::path::Path,
    metadata: &Metadata,
    tensors: &[(TensorSpec, &[u8])],
) -> Result<(), GgufError> {
    let file = std::fs::File::create(path).map_err(|source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w = GgufWriter::new(
        std::io::BufWriter::new(file),
        metadata,
        tensors.iter().map(|t| t.0.clone()).collect(),
    )?;
    for (spec, data) in tensors {
        w.write_tensor(&spec.name, data)?;
    }
    w.finish()?;
    Ok(())
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.push(*x as u8),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(*x as u8),
        Value::String(s) => put_str(buf, s),
        Value::Array(a) => put_array(buf, a),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => buf.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => buf.extend(v.iter().map(|&x| x as u8)),
        Array::String(v) => v.iter().for_each(|s| put_str(buf, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(buf, inner)),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
}
