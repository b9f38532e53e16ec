//! Writing GGUF files: for tests, fixtures and model generators.
//!
//! The layout is the one the reader expects (see `read.rs`), and the one the `gguf`
//! Python package's `GGUFWriter` produces: tensor data in the order tensors were added,
//! each padded to the alignment, the data section starting at the first aligned offset
//! after the tensor infos.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use hearth_kernels::quant::TensorType;

use crate::error::GgufError;
use crate::metadata::Metadata;
use crate::read::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::tensor::{tensor_bytes, MAX_DIMS};
use crate::value::{Array, Value};

/// Builds a GGUF file in memory and writes it out.
///
/// Tensors are checked when added (dims, block multiple, byte size, unique name), but
/// metadata is written as given, `general.alignment` included: a UINT32 alignment is
/// used for padding whatever its value (0 means the default), so tests can produce files
/// that the reader must refuse.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Metadata,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    ty: TensorType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Metadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Sets the version field (2 and 3 share one layout; other values make files the
    /// reader refuses).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets a metadata key; a key set twice keeps its first position and its last value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata.set(key, value);
        self
    }

    /// Sets `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.set(ALIGNMENT_KEY, alignment)
    }

    /// The metadata set so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a tensor of type `ty` and `shape` (GGUF order, `ne[0]` first) whose bytes are
    /// `data`, laid out as ggml stores that type.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        shape: &[u64],
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let data = data.into();
        if shape.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                n_dims: shape.len() as u32,
                max: MAX_DIMS,
            });
        }
        let expected = tensor_bytes(&name, ty, shape)?;
        if data.len() as u64 != expected {
            return Err(GgufError::DataSize {
                tensor: name,
                ty,
                shape: shape.to_vec(),
                len: data.len() as u64,
                expected,
            });
        }
        if !self.names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        self.tensors.push(PendingTensor {
            name,
            ty,
            shape: shape.to_vec(),
            data,
        });
        Ok(self)
    }

    /// The alignment used for padding: `general.alignment` if it is a non-zero UINT32.
    fn alignment(&self) -> u64 {
        match self.metadata.get(ALIGNMENT_KEY) {
            Some(Value::U32(a)) if *a != 0 => (*a).into(),
            _ => DEFAULT_ALIGNMENT.into(),
        }
    }

    /// Writes the file to `w`.
    pub fn write<W: Write>(&self, w: W) -> io::Result<()> {
        let mut w = Counting {
            inner: io::BufWriter::new(w),
            written: 0,
        };
        let alignment = self.alignment();
        let infos: Vec<HeadTensor<'_>> = self
            .tensors
            .iter()
            .map(|t| HeadTensor {
                name: &t.name,
                ty: t.ty,
                shape: &t.shape,
                n_bytes: t.data.len() as u64,
            })
            .collect();
        write_head(&mut w, self.version, &self.metadata, &infos, alignment)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.pad(alignment)?;
        }
        w.inner.flush()
    }

    /// Writes the file to `path`, creating or truncating it.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.write(std::fs::File::create(path)?)
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out)
            .expect("writing to a Vec<u8> cannot fail");
        out
    }
}

/// A tensor info as [`write_head`] lists it: its data is `n_bytes` long, and the data of
/// the tensors follow one another in list order, each padded to the alignment.
pub(crate) struct HeadTensor<'a> {
    pub name: &'a str,
    pub ty: TensorType,
    pub shape: &'a [u64],
    pub n_bytes: u64,
}

/// Everything before the data section: magic, version, counts, `metadata` and the tensor
/// infos (offsets computed from the sizes), padded to `alignment`. The caller then writes
/// each tensor's data followed by [`Counting::pad`].
pub(crate) fn write_head<W: Write>(
    w: &mut Counting<W>,
    version: u32,
    metadata: &Metadata,
    tensors: &[HeadTensor<'_>],
    alignment: u64,
) -> io::Result<()> {
    w.write_all(&GGUF_MAGIC)?;
    w.write_all(&version.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (key, value) in metadata.iter() {
        write_str(w, key)?;
        w.write_all(&value.value_type().id().to_le_bytes())?;
        write_value(w, value)?;
    }

    let mut offset = 0u64;
    for t in tensors {
        write_str(w, t.name)?;
        w.write_all(&(t.shape.len() as u32).to_le_bytes())?;
        for d in t.shape {
            w.write_all(&d.to_le_bytes())?;
        }
        w.write_all(&t.ty.id().to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        offset = pad_to(offset + t.n_bytes, alignment);
    }
    w.pad(alignment)
}

/// `n` rounded up to a multiple of `alignment`.
fn pad_to(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment
}

/// A writer that knows how many bytes it has written, for padding.
pub(crate) struct Counting<W: Write> {
    pub inner: W,
    pub written: u64,
}

impl<W: Write> Counting<W> {
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Zero bytes up to the next multiple of `alignment`.
    pub fn pad(&mut self, alignment: u64) -> io::Result<()> {
        let n = pad_to(self.written, alignment) - self.written;
        for _ in 0..n {
            self.write_all(&[0])?;
        }
        Ok(())
    }
}

fn write_str<W: Write>(w: &mut Counting<W>, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// The value's encoding, without its type id.
fn write_value<W: Write>(w: &mut Counting<W>, value: &Value) -> io::Result<()> {
    match value {
        Value::U8(v) => w.write_all(&v.to_le_bytes()),
        Value::I8(v) => w.write_all(&v.to_le_bytes()),
        Value::U16(v) => w.write_all(&v.to_le_bytes()),
        Value::I16(v) => w.write_all(&v.to_le_bytes()),
        Value::U32(v) => w.write_all(&v.to_le_bytes()),
        Value::I32(v) => w.write_all(&v.to_le_bytes()),
        Value::F32(v) => w.write_all(&v.to_le_bytes()),
        Value::U64(v) => w.write_all(&v.to_le_bytes()),
        Value::I64(v) => w.write_all(&v.to_le_bytes()),
        Value::F64(v) => w.write_all(&v.to_le_bytes()),
        Value::Bool(v) => w.write_all(&[u8::from(*v)]),
        Value::String(s) => write_str(w, s),
        Value::Array(a) => write_array(w, a),
    }
}

/// Writes each element of a slice with `to_le_bytes`.
macro_rules! write_items {
    ($w:expr, $items:expr) => {{
        for x in $items {
            $w.write_all(&x.to_le_bytes())?;
        }
        Ok(())
    }};
}

fn write_array<W: Write>(w: &mut Counting<W>, a: &Array) -> io::Result<()> {
    w.write_all(&a.element_type().id().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    match a {
        Array::U8(v) => w.write_all(v),
        Array::I8(v) => write_items!(w, v),
        Array::U16(v) => write_items!(w, v),
        Array::I16(v) => write_items!(w, v),
        Array::U32(v) => write_items!(w, v),
        Array::I32(v) => write_items!(w, v),
        Array::F32(v) => write_items!(w, v),
        Array::U64(v) => write_items!(w, v),
        Array::I64(v) => write_items!(w, v),
        Array::F64(v) => write_items!(w, v),
        Array::Bool(v) => write_items!(w, v.iter().map(|&b| u8::from(b))),
        Array::String(v) => {
            for s in v {
                write_str(w, s)?;
            }
            Ok(())
        }
        Array::Array(v) => {
            for inner in v {
                write_array(w, inner)?;
            }
            Ok(())
        }
    }
}
