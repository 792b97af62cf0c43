//! Reader for GGUF files (versions 2 and 3), the format llama.cpp stores models in.
//!
//! Layout: magic `GGUF`, version, tensor count, metadata count, then the metadata
//! key/value pairs, then one info record per tensor (name, dims, type, offset), then
//! padding to `general.alignment`, then the tensor data. All integers are little-endian.
//!
//! Every length and offset read from the file is checked against what is left of it
//! before anything is allocated or sliced, so a malformed or hostile file is an error,
//! never a panic or an out-of-bounds read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's own limit on tensor rank.
const MAX_DIMS: u32 = 4;
/// Arrays nest (an array of arrays); a bound keeps a hostile file off the stack.
const MAX_NESTING: u32 = 8;

/// What is wrong with a GGUF file, with the byte offset where it was found.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported GGUF version {0} (this reader handles versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated at offset {offset}: {what} needs {needed} bytes, {left} left")]
    Truncated {
        offset: usize,
        what: &'static str,
        needed: u64,
        left: usize,
    },
    #[error("unknown metadata value type {kind} at offset {offset}")]
    UnknownValueType { kind: u32, offset: usize },
    #[error("metadata string at offset {offset} is not valid UTF-8")]
    BadUtf8 { offset: usize },
    #[error("metadata arrays nested deeper than {MAX_NESTING} at offset {offset}")]
    TooDeep { offset: usize },
    #[error("tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    #[error("unknown ggml tensor type {kind} for tensor '{name}'")]
    UnknownTensorType { kind: u32, name: String },
    #[error("duplicate {what} '{name}'")]
    Duplicate { what: &'static str, name: String },
    #[error("metadata key '{key}': {reason}")]
    Metadata { key: String, reason: String },
    #[error("no tensor named '{0}'")]
    MissingTensor(String),
}

/// One metadata value, of any of GGUF's types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, whatever integer type the file used.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lies in the data section, and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them: `dims[0]` is the innermost (contiguous) one,
    /// so a PyTorch `[out, in]` weight appears here as `[in, out]`.
    pub dims: Vec<u64>,
    pub kind: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Size in bytes, derived from dims and type.
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // Checked when the file was parsed.
        self.dims.iter().product()
    }
}

/// Bytes shared between the file and the weights that point into it: a memory map of the
/// model file, or a buffer (tests, fuzzing). Weights keep the map alive, so a model's
/// quantized blocks are never copied.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A parsed GGUF file: metadata, tensor infos, and access to each tensor's bytes.
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    data_start: usize,
    storage: SharedBytes,
    /// The memory map behind `storage` when the file was opened from disk (for `release`).
    map: Option<Arc<memmap2::Mmap>>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; like every mmap reader we rely on nobody
        // truncating the model file while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let map = Arc::new(map);
        let mut parsed = Self::parse(map.clone())?;
        parsed.map = Some(map);
        Ok(parsed)
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(Arc::new(bytes))
    }

    fn parse(storage: SharedBytes) -> Result<Self, GgufError> {
        let header = parse_header((*storage).as_ref())?;
        Ok(GgufFile {
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_start: header.data_start,
            storage,
            map: None,
        })
    }

    /// Tells the OS that the file's bytes `range` will not be read again (a loader copied
    /// them into another layout), so the pages of the map that lie wholly inside it leave
    /// the process's memory. Without it a repacked model would be resident twice. The map
    /// stays valid: a later read of those bytes fetches them from the file again. A no-op
    /// for files held in memory.
    pub fn release(&self, range: std::ops::Range<usize>) {
        let Some(map) = &self.map else { return };
        const PAGE: usize = 4096;
        let (start, end) = (range.start.next_multiple_of(PAGE), range.end / PAGE * PAGE);
        if start < end && end <= map.len() {
            // SAFETY: the map is read-only and shared, so MADV_DONTNEED only drops pages
            // that the kernel reloads from the file on the next access; no data changes.
            // A failure only leaves the pages resident.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required metadata value, or an error naming the key.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::Metadata {
            key: key.into(),
            reason: "missing".into(),
        })
    }

    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.require(key)?
            .as_u64()
            .ok_or_else(|| wrong_type(key, "an unsigned integer"))
    }

    pub fn require_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.require(key)?
            .as_f64()
            .ok_or_else(|| wrong_type(key, "a number"))
    }

    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.require(key)?
            .as_str()
            .ok_or_else(|| wrong_type(key, "a string"))
    }

    pub fn require_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.require(key)?
            .as_array()
            .ok_or_else(|| wrong_type(key, "an array"))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor, in its GGUF block layout.
    pub fn tensor_data(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        // Bounds were checked at parse time.
        let start = self.data_start + info.offset as usize;
        Ok((
            info,
            &(*self.storage).as_ref()[start..start + info.size as usize],
        ))
    }

    /// The file's bytes and where a tensor starts in them, for weights that use the
    /// blocks in place.
    pub fn shared_tensor(
        &self,
        name: &str,
    ) -> Result<(&TensorInfo, SharedBytes, usize), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        Ok((
            info,
            self.storage.clone(),
            self.data_start + info.offset as usize,
        ))
    }
}

fn wrong_type(key: &str, expected: &str) -> GgufError {
    GgufError::Metadata {
        key: key.into(),
        reason: format!("expected {expected}"),
    }
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.take(4, "magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        // Each pair takes at least 12 bytes, so a huge count fails on the first read
        // past the end rather than allocating anything up front.
        let key = r.string("metadata key")?;
        let value = r.value(0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(GgufError::Duplicate {
                what: "metadata key",
                name: key,
            });
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(GgufError::Metadata {
                    key: "general.alignment".into(),
                    reason: format!("{v:?} is not a power of two up to 1 MiB"),
                });
            }
        },
    };

    let mut tensors: Vec<TensorInfo> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors {
        let info = r.tensor_info()?;
        if !names.insert(info.name.clone()) {
            return Err(GgufError::Duplicate {
                what: "tensor",
                name: info.name,
            });
        }
        tensors.push(info);
    }

    let data_start = align_up(r.pos as u64, alignment)
        .filter(|&s| s <= bytes.len() as u64)
        .ok_or(GgufError::Truncated {
            offset: r.pos,
            what: "padding before tensor data",
            needed: alignment,
            left: r.left(),
        })? as usize;
    let data_len = (bytes.len() - data_start) as u64;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(bad_tensor(
                &t.name,
                format!("offset {} is not aligned to {alignment}", t.offset),
            ));
        }
        let end = t.offset.checked_add(t.size);
        if end.is_none_or(|e| e > data_len) {
            return Err(bad_tensor(
                &t.name,
                format!(
                    "data at {}..+{} runs past the end of the file ({data_len} bytes of data)",
                    t.offset, t.size
                ),
            ));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? / align * align)
}

fn bad_tensor(name: &str, reason: String) -> GgufError {
    GgufError::BadTensor {
        name: name.into(),
        reason,
    }
}

/// A cursor over the file that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.left() as u64 {
            return Err(GgufError::Truncated {
                offset: self.pos,
                what,
                needed: n,
                left: self.left(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::BadUtf8 { offset })
    }

    fn value(&mut self, depth: u32) -> Result<Value, GgufError> {
        let offset = self.pos;
        let kind = self.u32("metadata value type")?;
        self.value_of(kind, offset, depth)
    }

    fn value_of(&mut self, kind: u32, offset: usize, depth: u32) -> Result<Value, GgufError> {
        const W: &str = "metadata value";
        Ok(match kind {
            0 => Value::U8(self.array::<1>(W)?[0]),
            1 => Value::I8(self.array::<1>(W)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(W)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(W)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(W)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(W)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(W)?)),
            7 => match self.array::<1>(W)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::Metadata {
                        key: format!("<bool at offset {offset}>"),
                        reason: format!("byte {b} is neither 0 nor 1"),
                    });
                }
            },
            8 => Value::String(self.string("metadata string")?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(GgufError::TooDeep { offset });
                }
                let elem_kind = self.u32("array element type")?;
                let len = self.u64("array length")?;
                // Every element takes at least one byte: a length beyond what is left
                // is a lie, refused before allocating.
                if len > self.left() as u64 {
                    return Err(GgufError::Truncated {
                        offset: self.pos,
                        what: "array elements",
                        needed: len,
                        left: self.left(),
                    });
                }
                // Reserve no more than a page of items up front: a `Value` is 32 bytes or
                // more, so the byte count alone does not bound the allocation.
                let mut items = Vec::with_capacity((len as usize).min(1024));
                for _ in 0..len {
                    let at = self.pos;
                    items.push(self.value_of(elem_kind, at, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(W)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(W)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(W)?)),
            kind => return Err(GgufError::UnknownValueType { kind, offset }),
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor rank")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad_tensor(
                &name,
                format!("rank {n_dims}, expected 1 to {MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let kind_id = self.u32("tensor type")?;
        let kind = GgmlType::from_id(kind_id).ok_or_else(|| GgufError::UnknownTensorType {
            kind: kind_id,
            name: name.clone(),
        })?;
        let offset = self.u64("tensor offset")?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad_tensor(&name, format!("shape {dims:?} overflows")))?;
        let block = kind.block_size() as u64;
        if dims[0] % block != 0 {
            return Err(bad_tensor(
                &name,
                format!(
                    "row length {} is not a multiple of the {kind:?} block size {block}",
                    dims[0]
                ),
            ));
        }
        let size = (n_elements / block)
            .checked_mul(kind.block_bytes() as u64)
            .ok_or_else(|| bad_tensor(&name, format!("byte size of shape {dims:?} overflows")))?;
        Ok(TensorInfo {
            name,
            dims,
            kind,
            offset,
            size,
        })
    }
}
