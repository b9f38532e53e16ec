//! Parsing and validating a GGUF file held in memory.
//!
//! Layout (GGUF v2/v3, little-endian; `ggml/docs/gguf.md`):
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count  × { key: string, type: u32, value }
//! tensor_count × { name: string, n_dims: u32, ne: u64 × n_dims, type: u32, offset: u64 }
//! padding to `general.alignment` (default 32), then the data section
//! string = len u64, UTF-8 bytes; array = element type u32, count u64, elements
//! ```
//! The file is hostile until proven otherwise: every count and length is checked against
//! the bytes left before anything is allocated for it, all arithmetic on file values is
//! checked, and array nesting is bounded, so no input makes the parser panic, recurse
//! without bound, or allocate more than the file holds.

use std::collections::HashMap;

use hearth_kernels::quant::TensorType;

use crate::error::{shown_name, GgufError};
use crate::metadata::Metadata;
use crate::tensor::{tensor_bytes, TensorInfo, MAX_DIMS};
use crate::value::{Array, StringArray, Value, ValueType};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The alignment of the data section and of every tensor when the file does not set
/// `general.alignment`.
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// How deep arrays of arrays may nest (an array of scalars has depth 1). GGUF sets no
/// limit, but each level costs only 12 bytes, so without one a small file could make a
/// recursive reader overflow its stack. No known model nests at all.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// The smallest encoding of one key-value pair: an empty key, a type, a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// The smallest encoding of one tensor info: an empty name, n_dims = 0, type, offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 4 + 8;

/// Everything a GGUF file declares before its data section, validated.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub by_name: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

/// Names the field being read, for errors only: built when an error happens.
type Field<'f> = &'f dyn Fn() -> String;

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: Field) -> Result<&'a [u8], GgufError> {
        if n > self.left() {
            return Err(GgufError::Truncated {
                field: field(),
                offset: self.pos as u64,
                need: n,
                left: self.left(),
            });
        }
        // n <= left <= usize::MAX, so the cast is lossless.
        let bytes = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, field)?);
        Ok(out)
    }

    fn u32(&mut self, field: Field) -> Result<u32, GgufError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: Field) -> Result<u64, GgufError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A count of items that each take at least `min_size` bytes; refused if they cannot
    /// all fit in the rest of the file, so that the count can size an allocation.
    fn count(&mut self, min_size: u64, field: Field) -> Result<u64, GgufError> {
        let count = self.u64(field)?;
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|n| n <= self.left());
        if !fits {
            return Err(GgufError::CountTooLarge {
                field: field(),
                count,
                min_size,
                left: self.left(),
            });
        }
        Ok(count)
    }

    /// A length-prefixed UTF-8 string, borrowed from the file.
    fn str(&mut self, field: Field) -> Result<&'a str, GgufError> {
        let len = self.u64(field)?;
        if len > self.left() {
            return Err(GgufError::StringTooLong {
                field: field(),
                len,
                left: self.left(),
            });
        }
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 { field: field() })
    }

    /// `n` elements of `size` bytes each, as one slice.
    fn elements(&mut self, n: u64, size: u64, field: Field) -> Result<&'a [u8], GgufError> {
        // `count` already checked n * min_encoded_size (= size here) against the bytes left.
        let total = n
            .checked_mul(size)
            .ok_or_else(|| GgufError::CountTooLarge {
                field: field(),
                count: n,
                min_size: size,
                left: self.left(),
            })?;
        self.take(total, field)
    }
}

/// A capacity for `count` items of `T` that never exceeds the bytes left in the file: a
/// key-value pair or tensor info is larger in memory than its smallest encoding, and a
/// claimed count must not buy an allocation bigger than the file. (Items that really are
/// in the file can still grow the Vec past it, by at most that size ratio, in a file made
/// of nothing but empty keys or empty inner arrays.)
fn bounded_capacity<T>(count: u64, left: u64) -> usize {
    let by_bytes = left / std::mem::size_of::<T>().max(1) as u64;
    count.min(by_bytes) as usize
}

/// Parses and validates `buf`, a whole GGUF file.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };

    let magic: [u8; 4] = cur.array(&|| "header magic".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(&|| "header version".to_string())?;
    match version {
        2 | 3 => {}
        1 => return Err(GgufError::Version1),
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(GgufError::BigEndian(v)),
        v => return Err(GgufError::UnknownVersion(v)),
    }
    // The tensor count is checked against the bytes left once the metadata is read (it
    // sizes nothing before), so that a file cut inside its metadata says so.
    let tensor_count_at = cur.pos;
    let tensor_count = cur.u64(&|| "header tensor_count".to_string())?;
    let kv_count = cur.count(MIN_KV_SIZE, &|| "header kv_count".to_string())?;

    let mut metadata = Metadata::new();
    metadata.reserve(bounded_capacity::<(String, Value)>(kv_count, cur.left()));
    for i in 0..kv_count {
        let key = cur.str(&|| format!("metadata key #{i}"))?;
        // Errors below name the key; `read_value` only uses it for that.
        let shown = shown_name(key);
        let type_id = cur.u32(&|| format!("metadata key '{shown}' type"))?;
        let value = read_value(&mut cur, type_id, &shown)?;
        metadata.push_unique(key.to_string(), value)?;
    }

    let alignment = alignment(&metadata)?;

    let fits = tensor_count
        .checked_mul(MIN_TENSOR_INFO_SIZE)
        .is_some_and(|n| n <= cur.left());
    if !fits {
        return Err(GgufError::CountTooLarge {
            field: format!("header tensor_count (at offset {tensor_count_at})"),
            count: tensor_count,
            min_size: MIN_TENSOR_INFO_SIZE,
            left: cur.left(),
        });
    }
    let mut tensors = Vec::with_capacity(bounded_capacity::<TensorInfo>(tensor_count, cur.left()));
    let mut by_name = HashMap::with_capacity(tensors.capacity());
    for i in 0..tensor_count {
        let info = read_tensor_info(&mut cur, i)?;
        if by_name.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor {
                tensor: shown_name(&info.name),
            });
        }
        tensors.push(info);
    }

    // The data section starts at the next multiple of the alignment.
    let end_of_infos = cur.pos as u64;
    let data_offset =
        end_of_infos
            .checked_next_multiple_of(alignment)
            .ok_or(GgufError::NoDataSection {
                data_offset: u64::MAX,
                file_len: buf.len() as u64,
            })?;
    let file_len = buf.len() as u64;
    let data_len = match file_len.checked_sub(data_offset) {
        Some(len) => len,
        // A file without tensors may stop right after its metadata.
        None if tensors.is_empty() => 0,
        None => {
            return Err(GgufError::NoDataSection {
                data_offset,
                file_len,
            })
        }
    };
    for t in &mut tensors {
        place_tensor(t, alignment, data_offset, data_len)?;
    }
    check_overlaps(&tensors)?;

    Ok(Parsed {
        version,
        metadata,
        tensors,
        by_name,
        alignment,
        data_offset,
    })
}

/// `general.alignment`: a UINT32 that is a non-zero power of two, or 32 when absent.
fn alignment(metadata: &Metadata) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT.into()),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok((*a).into()),
        Some(Value::U32(a)) => Err(GgufError::BadAlignment {
            reason: format!("{a} is not a non-zero power of two"),
        }),
        Some(v) => Err(GgufError::BadAlignment {
            reason: format!("type is {}, expected UINT32", v.type_description()),
        }),
    }
}

/// One metadata value of type `type_id`, for `key`.
fn read_value(cur: &mut Cursor, type_id: u32, key: &str) -> Result<Value, GgufError> {
    let field = || format!("metadata key '{key}' value");
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        id: type_id,
    })?;
    Ok(match ty {
        ValueType::U8 => Value::U8(u8::from_le_bytes(cur.array(&field)?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array(&field)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(&field)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(&field)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(&field)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(&field)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(&field)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(&field)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(&field)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(&field)?)),
        ValueType::Bool => {
            let [byte] = cur.array(&field)?;
            Value::Bool(bool_from_byte(byte, key)?)
        }
        ValueType::String => Value::String(cur.str(&field)?.to_string()),
        ValueType::Array => Value::Array(read_array(cur, key, 1)?),
    })
}

/// GGUF bools are one byte, 0 or 1; anything else is refused rather than guessed at.
fn bool_from_byte(byte: u8, key: &str) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool {
            key: key.to_string(),
            byte,
        }),
    }
}

/// Decodes fixed-size little-endian elements into a `Vec` sized exactly by the (already
/// bounds-checked) bytes.
fn decode<T, const N: usize>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from_le(a)
        })
        .collect()
}

/// An array (element type, count, elements) at nesting `depth` (1 = a top-level value).
fn read_array(cur: &mut Cursor, key: &str, depth: usize) -> Result<Array, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            key: key.to_string(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let field = || format!("metadata key '{key}' array");
    let type_id = cur.u32(&field)?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        id: type_id,
    })?;
    let n = cur.count(ty.min_encoded_size(), &field)?;
    let size = ty.min_encoded_size();
    Ok(match ty {
        ValueType::U8 => Array::U8(cur.elements(n, size, &field)?.to_vec()),
        ValueType::I8 => Array::I8(decode(cur.elements(n, size, &field)?, i8::from_le_bytes)),
        ValueType::U16 => Array::U16(decode(cur.elements(n, size, &field)?, u16::from_le_bytes)),
        ValueType::I16 => Array::I16(decode(cur.elements(n, size, &field)?, i16::from_le_bytes)),
        ValueType::U32 => Array::U32(decode(cur.elements(n, size, &field)?, u32::from_le_bytes)),
        ValueType::I32 => Array::I32(decode(cur.elements(n, size, &field)?, i32::from_le_bytes)),
        ValueType::F32 => Array::F32(decode(cur.elements(n, size, &field)?, f32::from_le_bytes)),
        ValueType::U64 => Array::U64(decode(cur.elements(n, size, &field)?, u64::from_le_bytes)),
        ValueType::I64 => Array::I64(decode(cur.elements(n, size, &field)?, i64::from_le_bytes)),
        ValueType::F64 => Array::F64(decode(cur.elements(n, size, &field)?, f64::from_le_bytes)),
        ValueType::Bool => {
            let bytes = cur.elements(n, size, &field)?;
            let mut items = Vec::with_capacity(bytes.len());
            for &b in bytes {
                items.push(bool_from_byte(b, key)?);
            }
            Array::Bool(items)
        }
        ValueType::String => Array::String(read_strings(cur, n, key)?),
        ValueType::Array => {
            // An empty inner array is 12 bytes in the file but 32 in memory: reserve no
            // more than the bytes left, and let inner arrays that really are there grow it.
            let mut items = Vec::with_capacity(bounded_capacity::<Array>(n, cur.left()));
            for _ in 0..n {
                items.push(read_array(cur, key, depth + 1)?);
            }
            Array::Array(items)
        }
    })
}

/// `n` strings into one buffer. A first pass over the length prefixes finds the total
/// size (and any string that overruns the file), so both allocations are exact and no
/// larger than the bytes they are read from.
fn read_strings(cur: &mut Cursor, n: u64, key: &str) -> Result<StringArray, GgufError> {
    let item = |i: u64| move || format!("metadata key '{key}' item {i}");
    let mut scan = Cursor {
        buf: cur.buf,
        pos: cur.pos,
    };
    let mut total = 0usize;
    for i in 0..n {
        let len = scan.u64(&item(i))?;
        if len > scan.left() {
            return Err(GgufError::StringTooLong {
                field: item(i)(),
                len,
                left: scan.left(),
            });
        }
        // len <= bytes left: neither the position nor the total can overflow.
        scan.pos += len as usize;
        total += len as usize;
    }
    // `count` checked n * 8 <= bytes left.
    let mut strings = StringArray::with_capacity(n as usize, total);
    for i in 0..n {
        strings.push(cur.str(&item(i))?);
    }
    Ok(strings)
}

/// Tensor info `index`: name, dims, type and offset; the shape is checked against the
/// type here, the offset later, once the data section is known.
fn read_tensor_info(cur: &mut Cursor, index: u64) -> Result<TensorInfo, GgufError> {
    let full_name = cur.str(&|| format!("tensor #{index} name"))?;
    // Errors below name the tensor.
    let name = shown_name(full_name);
    let n_dims = cur.u32(&|| format!("tensor '{name}' n_dims"))?;
    if n_dims as usize > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_string(),
            n_dims,
            max: MAX_DIMS,
        });
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        shape.push(cur.u64(&|| format!("tensor '{name}' ne[{d}]"))?);
    }
    let type_id = cur.u32(&|| format!("tensor '{name}' type"))?;
    let offset = cur.u64(&|| format!("tensor '{name}' offset"))?;
    let ty = TensorType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        tensor: name.to_string(),
        id: type_id,
    })?;
    let n_bytes = tensor_bytes(&name, ty, &shape)?;
    Ok(TensorInfo {
        name: full_name.to_string(),
        ty,
        shape,
        offset,
        n_bytes,
        file_offset: 0,
    })
}

/// Checks that the tensor's bytes are aligned and inside the data section, and records
/// where they are in the file.
fn place_tensor(
    t: &mut TensorInfo,
    alignment: u64,
    data_offset: u64,
    data_len: u64,
) -> Result<(), GgufError> {
    // The alignment is a power of two (checked when it was read).
    if t.offset & (alignment - 1) != 0 {
        return Err(GgufError::Misaligned {
            tensor: shown_name(&t.name),
            offset: t.offset,
            alignment,
        });
    }
    let inside = t
        .offset
        .checked_add(t.n_bytes)
        .is_some_and(|end| end <= data_len);
    if !inside {
        return Err(GgufError::OutOfBounds {
            tensor: shown_name(&t.name),
            offset: t.offset,
            n_bytes: t.n_bytes,
            data_len,
        });
    }
    // offset <= data_len = file_len - data_offset, so this cannot overflow.
    t.file_offset = data_offset + t.offset;
    Ok(())
}

/// Refuses two tensors sharing bytes (empty tensors share none). Sorting by offset and
/// tracking the furthest end seen finds every overlap in O(n log n).
fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    let mut furthest: Option<&TensorInfo> = None;
    for t in order {
        if let Some(f) = furthest {
            // Both were checked to end inside the data section: no overflow.
            if t.offset < f.offset + f.n_bytes {
                return Err(GgufError::Overlap {
                    tensor: shown_name(&t.name),
                    other: shown_name(&f.name),
                });
            }
        }
        let extends = match furthest {
            None => true,
            Some(f) => t.offset + t.n_bytes > f.offset + f.n_bytes,
        };
        if extends {
            furthest = Some(t);
        }
    }
    Ok(())
}
