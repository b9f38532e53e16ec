//! The key-value section of a GGUF file, kept in file order, with typed getters.

use std::collections::HashMap;

use crate::error::{shown_name, GgufError};
use crate::value::{Array, Value};

/// Metadata key-value pairs in the order they appear in the file (or were set, for the
/// writer), with lookup by key. Keys are unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

/// A Rust type a metadata value can be read as with [`Metadata::get_as`]; the value must
/// have exactly the matching GGUF type (no silent widening).
pub trait FromValue<'a>: Sized {
    /// The GGUF type name used in [`GgufError::WrongType`].
    const EXPECTED: &'static str;
    /// The value as `Self`, or `None` for another type.
    fn from_value(v: &'a Value) -> Option<Self>;
}

/// Implements [`FromValue`] for the scalar types.
macro_rules! from_value_scalar {
    ($($t:ty => $variant:ident, $name:literal;)*) => {
        $(
            impl FromValue<'_> for $t {
                const EXPECTED: &'static str = $name;
                fn from_value(v: &Value) -> Option<Self> {
                    match v {
                        Value::$variant(x) => Some(*x),
                        _ => None,
                    }
                }
            }
        )*
    };
}

from_value_scalar! {
    u8 => U8, "UINT8";
    i8 => I8, "INT8";
    u16 => U16, "UINT16";
    i16 => I16, "INT16";
    u32 => U32, "UINT32";
    i32 => I32, "INT32";
    f32 => F32, "FLOAT32";
    bool => Bool, "BOOL";
    u64 => U64, "UINT64";
    i64 => I64, "INT64";
    f64 => F64, "FLOAT64";
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "STRING";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_str()
    }
}

impl<'a> FromValue<'a> for &'a Array {
    const EXPECTED: &'static str = "ARRAY";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_array()
    }
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The value of `key`, of whatever type.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Sets `key`, replacing (in place, keeping its position) any value it had; returns
    /// the old value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Appends a key read from a file, refusing a duplicate: which of two values a reader
    /// would take is ambiguous, and llama.cpp refuses such files too.
    pub(crate) fn push_unique(&mut self, key: String, value: Value) -> Result<(), GgufError> {
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key: shown_name(&key),
            });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Reserves room for `n` more entries.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        self.index.reserve(n);
    }

    /// The value of `key` as `T`: an error naming the key if it is missing or has another
    /// type.
    pub fn get_as<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T, GgufError> {
        match self.get_opt(key)? {
            Some(v) => Ok(v),
            None => Err(GgufError::MissingKey {
                key: key.to_string(),
            }),
        }
    }

    /// The value of `key` as `T`, `None` if it is missing, and an error naming the key if
    /// it has another type. For optional hyper-parameters with a default.
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        T::from_value(v)
            .map(Some)
            .ok_or_else(|| GgufError::WrongType {
                key: key.to_string(),
                expected: T::EXPECTED,
                found: v.type_description(),
            })
    }

    /// A required UINT32.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_as(key)
    }

    /// A required INT32.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.get_as(key)
    }

    /// A required UINT64.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_as(key)
    }

    /// A required FLOAT32.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get_as(key)
    }

    /// A required BOOL.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get_as(key)
    }

    /// A required STRING.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_as(key)
    }

    /// A required ARRAY.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        self.get_as(key)
    }

    /// A required non-negative integer of any width (see [`Value::to_u64_lossless`]).
    pub fn get_uint(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })?;
        v.to_u64_lossless().ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            expected: "a non-negative integer",
            found: v.type_description(),
        })
    }
}
