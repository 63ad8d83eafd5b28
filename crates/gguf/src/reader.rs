//! Parsing: header, metadata, tensor table, data section — every count, length and
//! offset checked against the bytes actually present before anything is allocated.

use crate::value::{Array, Metadata, Value, ValueType};
use crate::{GgmlType, GgufError, TensorInfo};

/// "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// The alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays nested deeper than this are rejected (real files use one level at most).
const MAX_ARRAY_DEPTH: u32 = 8;

/// Everything in a file before the tensor data.
pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> GgufError {
        GgufError::malformed(self.file, what)
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated {what} at byte {} (needs {n} bytes, {} left)",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(self.err(format!(
                "{what} at byte {at} claims length {len} but only {} bytes remain",
                self.remaining()
            )));
        }
        let raw = self.take(len, what)?;
        // GGUF strings are UTF-8; a few old vocabularies hold stray bytes, which we
        // keep readable rather than refusing the whole model.
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    /// Checks that `count` values of at least `min_size` bytes each can fit in what is
    /// left, so a corrupt count cannot make us allocate gigabytes.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<usize, GgufError> {
        match count.checked_mul(min_size) {
            Some(need) if need <= self.remaining() => Ok(count as usize),
            _ => Err(self.err(format!(
                "{what} count {count} at byte {} cannot fit in the {} bytes left",
                self.pos,
                self.remaining()
            ))),
        }
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType, GgufError> {
        let at = self.pos;
        let id = self.u32(what)?;
        ValueType::from_id(id)
            .ok_or_else(|| self.err(format!("unknown value type {id} for {what} at byte {at}")))
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: u32) -> Result<Value, GgufError> {
        let what = key;
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8(what)?),
            ValueType::I8 => Value::I8(self.u8(what)? as i8),
            ValueType::U16 => Value::U16(self.u16(what)?),
            ValueType::I16 => Value::I16(self.u16(what)? as i16),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(self.u32(what)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(self.u64(what)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(what)?)),
            ValueType::Bool => Value::Bool(self.bool(what)?),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("{what}: invalid bool byte {b} at byte {at}"))),
        }
    }

    fn array_value(&mut self, key: &str, depth: u32) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "{key}: arrays nested more than {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let elem = self.value_type(key)?;
        let count = self.u64(key)?;
        let n = self.check_count(count, elem.min_encoded_size(), &format!("{key}: array"))?;
        macro_rules! prim {
            ($variant:ident, $read:expr) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($read(self)?);
                }
                Array::$variant(v)
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n as u64, key)?.to_vec()),
            ValueType::I8 => {
                Array::I8(self.take(n as u64, key)?.iter().map(|&b| b as i8).collect())
            }
            ValueType::U16 => prim!(U16, |c: &mut Self| c.u16(key)),
            ValueType::I16 => prim!(I16, |c: &mut Self| c.u16(key).map(|x| x as i16)),
            ValueType::U32 => prim!(U32, |c: &mut Self| c.u32(key)),
            ValueType::I32 => prim!(I32, |c: &mut Self| c.u32(key).map(|x| x as i32)),
            ValueType::F32 => prim!(F32, |c: &mut Self| c.u32(key).map(f32::from_bits)),
            ValueType::U64 => prim!(U64, |c: &mut Self| c.u64(key)),
            ValueType::I64 => prim!(I64, |c: &mut Self| c.u64(key).map(|x| x as i64)),
            ValueType::F64 => prim!(F64, |c: &mut Self| c.u64(key).map(f64::from_bits)),
            ValueType::Bool => prim!(Bool, |c: &mut Self| c.bool(key)),
            ValueType::String => prim!(String, |c: &mut Self| c.string(key)),
            ValueType::Array => prim!(Array, |c: &mut Self| c.array_value(key, depth + 1)),
        })
    }
}

/// Parses everything up to the data section and validates the tensor table against
/// the total size of the file (`bytes` may be a prefix only if `file_len` says so).
pub(crate) fn parse(bytes: &[u8], file: &str) -> Result<Parsed, GgufError> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        file,
    };
    if bytes.is_empty() {
        return Err(c.err("the file is empty"));
    }
    let magic = c.u32("magic")?;
    if magic != GGUF_MAGIC {
        let shown: String = bytes[..bytes.len().min(4)]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        return Err(c.err(format!("wrong magic \"{shown}\" (expected \"GGUF\")")));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(c.err("GGUF version 1 is obsolete and not supported; re-convert the model"))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(
                c.err("this is a big-endian GGUF file; only little-endian files are supported")
            )
        }
        v => return Err(c.err(format!("unknown GGUF version {v} (supported: 2, 3)"))),
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;

    // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    let n_kv = c.check_count(kv_count, 13, "metadata key/value")?;
    let mut metadata = Metadata::new(file);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(c.err(format!("metadata key #{i} is empty")));
        }
        let ty = c.value_type(&key)?;
        let value = c.value(ty, &key, 0)?;
        metadata.insert_new(key, value).map_err(|e| c.err(e))?;
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(c.err(format!(
                "general.alignment must be a non-zero power of two u32, found {}",
                match v {
                    Value::U32(a) => a.to_string(),
                    other => other.describe(),
                }
            )))
        }
    };

    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
    let n_tensors = c.check_count(tensor_count, 24, "tensor")?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let n_dims = c.u32(&format!("tensor '{name}' dimension count"))?;
        if n_dims as usize > MAX_DIMS || n_dims == 0 {
            return Err(c.err(format!(
                "tensor '{name}' has {n_dims} dimensions (must be 1..={MAX_DIMS})"
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(&format!("tensor '{name}' shape"))?);
        }
        let type_id = c.u32(&format!("tensor '{name}' type"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| {
            c.err(format!(
                "tensor '{name}' has unknown tensor type id {type_id}"
            ))
        })?;
        let offset = c.u64(&format!("tensor '{name}' offset"))?;
        let size = tensor_size(&name, ty, &ne).map_err(|e| c.err(e))?;
        if offset % alignment != 0 {
            return Err(c.err(format!(
                "tensor '{name}' offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(c.err(format!("duplicate tensor name '{name}'")));
        }
        tensors.push(TensorInfo {
            name,
            ty,
            ne,
            offset,
            size,
            part: 0,
        });
    }

    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(c.err(format!("data section would start at {data_offset}, past the end of the file ({file_len} bytes)")));
    }
    let data_len = file_len.saturating_sub(data_offset);
    check_extents(&tensors, data_len).map_err(|e| c.err(e))?;
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Bytes a tensor of this type and shape takes, or a message saying why the shape is invalid.
pub(crate) fn tensor_size(name: &str, ty: GgmlType, ne: &[u64]) -> Result<u64, String> {
    if let Some(&d) = ne.iter().find(|&&d| d > i64::MAX as u64) {
        return Err(format!(
            "tensor '{name}' has a negative or absurd dimension {d}"
        ));
    }
    // The element count must fit too (not just the byte size): with a zero-length
    // dimension the byte size is 0 whatever the other dimensions hold, but the row and
    // element counts derived from them must still be representable.
    ne.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("tensor '{name}': element count of shape {ne:?} overflows"))?;
    let row = ty.row_bytes(ne[0]).ok_or_else(|| {
        format!(
            "tensor '{name}': row length {} is not a multiple of the {} block size {}",
            ne[0],
            ty.name(),
            ty.block_size()
        )
    })?;
    ne[1..]
        .iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d))
        .filter(|&s| s <= i64::MAX as u64)
        .ok_or_else(|| format!("tensor '{name}': size of shape {ne:?} overflows"))
}

/// Checks that every tensor lies inside the data section and that no two overlap.
fn check_extents(tensors: &[TensorInfo], data_len: u64) -> Result<(), String> {
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let end = t
            .offset
            .checked_add(t.size)
            .filter(|&e| e <= data_len)
            .ok_or_else(|| {
                format!(
                    "tensor '{}' data ({} bytes at offset {}) is not within the file (data section has {data_len} bytes)",
                    t.name, t.size, t.offset
                )
            })?;
        if t.size > 0 {
            spans.push((t.offset, end, &t.name));
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2));
        }
    }
    Ok(())
}
