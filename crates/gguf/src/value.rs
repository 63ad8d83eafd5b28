//! Metadata values: the 13 GGUF value types, typed arrays, and the ordered key/value map
//! with accessors whose errors name the file, the key, what was found and what was expected.

use std::collections::HashMap;
use std::sync::Arc;

use crate::GgufError;

/// The on-disk type tag of a metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type with this on-disk tag.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Lower-case name used in error messages ("u32", "string", ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Smallest number of bytes one value of this type takes in a file (used to reject
    /// absurd array counts before allocating).
    pub(crate) fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed array; arrays of arrays carry each inner array's own element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    /// The value's type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as a signed 128-bit integer, if it is an integer type.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v as i128,
            Value::I8(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::I32(v) => v as i128,
            Value::U64(v) => v as i128,
            Value::I64(v) => v as i128,
            _ => return None,
        })
    }

    /// Describes the value's type for error messages ("a string", "an array of 5 u32").
    pub fn describe(&self) -> String {
        match self {
            Value::Array(a) => format!("an array of {} {}", a.len(), a.elem_type().name()),
            other => {
                let n = other.value_type().name();
                if n.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    format!("an {n}")
                } else {
                    format!("a {n}")
                }
            }
        }
    }
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type tag.
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Integer elements widened to i128 (None for non-integer arrays).
    pub fn ints(&self) -> Option<Vec<i128>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I8(v) => v.iter().map(|&x| x as i128).collect(),
            Array::U16(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I16(v) => v.iter().map(|&x| x as i128).collect(),
            Array::U32(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I32(v) => v.iter().map(|&x| x as i128).collect(),
            Array::U64(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I64(v) => v.iter().map(|&x| x as i128).collect(),
            _ => return None,
        })
    }
}

/// The metadata of one file: key/value pairs in file order, with a name index.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    file: Arc<str>,
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty map whose errors will name `file`.
    pub fn new(file: &str) -> Metadata {
        Metadata {
            file: Arc::from(file),
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Inserts or replaces a value (a replaced key keeps its position).
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Inserts a value, failing if the key is already present (files must not repeat keys).
    pub(crate) fn insert_new(&mut self, key: String, value: Value) -> Result<(), String> {
        if self.index.contains_key(&key) {
            return Err(format!("duplicate metadata key '{key}'"));
        }
        self.set(key, value);
        Ok(())
    }

    /// Removes a key, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// All pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file name used in error messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    fn err(&self, key: &str, problem: impl Into<String>) -> GgufError {
        GgufError::Metadata {
            file: self.file.to_string(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    fn required(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| self.err(key, "missing"))
    }

    fn wrong_type(&self, key: &str, v: &Value, expected: &str) -> GgufError {
        self.err(key, format!("is {}, expected {expected}", v.describe()))
    }

    fn int_in<T: TryFrom<i128>>(
        &self,
        key: &str,
        v: &Value,
        expected: &str,
    ) -> Result<T, GgufError> {
        let i = v
            .as_int()
            .ok_or_else(|| self.wrong_type(key, v, expected))?;
        T::try_from(i).map_err(|_| self.err(key, format!("value {i} does not fit in {expected}")))
    }

    /// An integer key as u32 (any integer type whose value fits).
    pub fn u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.required(key)?;
        self.int_in(key, v, "u32")
    }

    /// An integer key as u64 (any integer type whose value fits).
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.required(key)?;
        self.int_in(key, v, "u64")
    }

    /// An integer key as i64.
    pub fn i64(&self, key: &str) -> Result<i64, GgufError> {
        let v = self.required(key)?;
        self.int_in(key, v, "i64")
    }

    /// A float key (f32 or f64; integers are accepted too, as some converters write them).
    pub fn f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.required(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            v => match v.as_int() {
                Some(i) => Ok(i as f32),
                None => Err(self.wrong_type(key, v, "f32")),
            },
        }
    }

    /// A bool key.
    pub fn bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.required(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(self.wrong_type(key, v, "bool")),
        }
    }

    /// A string key.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            v => Err(self.wrong_type(key, v, "string")),
        }
    }

    /// An array key (any element type).
    pub fn array(&self, key: &str) -> Result<&Array, GgufError> {
        match self.required(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.wrong_type(key, v, "array")),
        }
    }

    /// An array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.array(key)? {
            Array::String(v) => Ok(v.iter().map(|s| s.as_str()).collect()),
            a => Err(self.err(
                key,
                format!(
                    "is an array of {}, expected an array of string",
                    a.elem_type().name()
                ),
            )),
        }
    }

    /// An array of integers as i32 (any integer element type whose values fit).
    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let a = self.array(key)?;
        let ints = a.ints().ok_or_else(|| {
            self.err(
                key,
                format!(
                    "is an array of {}, expected an array of integers",
                    a.elem_type().name()
                ),
            )
        })?;
        ints.into_iter()
            .enumerate()
            .map(|(i, x)| {
                i32::try_from(x)
                    .map_err(|_| self.err(key, format!("element {i} = {x} does not fit in i32")))
            })
            .collect()
    }

    /// An array of floats as f32 (f32 or f64 elements).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        match self.array(key)? {
            Array::F32(v) => Ok(v.clone()),
            Array::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            a => Err(self.err(
                key,
                format!(
                    "is an array of {}, expected an array of f32",
                    a.elem_type().name()
                ),
            )),
        }
    }

    /// [`Metadata::u32`], or `None` when the key is missing.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.opt(key, Self::u32)
    }
    /// [`Metadata::u64`], or `None` when the key is missing.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.opt(key, Self::u64)
    }
    /// [`Metadata::f32`], or `None` when the key is missing.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.opt(key, Self::f32)
    }
    /// [`Metadata::bool`], or `None` when the key is missing.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.opt(key, Self::bool)
    }
    /// [`Metadata::str`], or `None` when the key is missing.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        if self.contains(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }
    /// [`Metadata::str_array`], or `None` when the key is missing.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        if self.contains(key) {
            self.str_array(key).map(Some)
        } else {
            Ok(None)
        }
    }
    /// [`Metadata::i32_array`], or `None` when the key is missing.
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.opt(key, Self::i32_array)
    }
    /// [`Metadata::f32_array`], or `None` when the key is missing.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.opt(key, Self::f32_array)
    }

    fn opt<T>(
        &self,
        key: &str,
        f: impl Fn(&Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        if self.contains(key) {
            f(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}
