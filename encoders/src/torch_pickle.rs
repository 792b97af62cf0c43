//! Reader for PyTorch's *legacy* (non-zip) serialization format, as written by
//! `torch.save(obj, f, _use_new_zipfile_serialization=False)` (and by every
//! `torch.save` before PyTorch 1.6).
//!
//! Layout of such a file (all integers little-endian):
//! 1. pickle of the magic number `0x1950a86a20f9469cfc6c`
//! 2. pickle of the protocol version `1001`
//! 3. pickle of a `sys_info` dict (`little_endian`, `type_sizes`, ...)
//! 4. pickle of the object itself; every tensor is
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose
//!    storage is a persistent id `('storage', torch.FloatStorage, key, location,
//!    numel, None)`
//! 5. pickle of the list of storage keys (torch writes them sorted as strings)
//! 6. for each key, in that order: an `u64` element count, then the raw elements.
//!
//! Only the small subset of pickle needed for state dicts is implemented. Every
//! read is bounds-checked and all size arithmetic is checked, so malformed input
//! yields a [`PthError`] and never a panic.

use std::collections::HashMap;
use std::rc::Rc;

const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i128 = 1001;
/// Output elements allowed per byte of file, all tensors together: a real checkpoint holds
/// at most one element per byte (f32 at four bytes, f16 at two), so four leaves room for
/// views that share storage while a tiny file cannot ask for gigabytes through zero
/// strides or many tensors on one storage.
pub const ELEMENTS_PER_FILE_BYTE: u64 = 4;

/// One tensor of the state dict, converted to contiguous row-major `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    pub name: String,
    /// Element type of the storage in the file (the data is converted to f32).
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Storage element types, named after torch's `*Storage` classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

/// torch's storage classes (`torch.FloatStorage`, ...) and what they hold.
const STORAGE_CLASSES: [(&str, DType); 10] = [
    ("FloatStorage", DType::F32),
    ("HalfStorage", DType::F16),
    ("BFloat16Storage", DType::BF16),
    ("DoubleStorage", DType::F64),
    ("LongStorage", DType::I64),
    ("IntStorage", DType::I32),
    ("ShortStorage", DType::I16),
    ("CharStorage", DType::I8),
    ("ByteStorage", DType::U8),
    ("BoolStorage", DType::Bool),
];

impl DType {
    /// Bytes per element on disk. Note: `sys_info.type_sizes.long` may say 4 (files
    /// saved on Windows do), but LongStorage elements are always written as 8 bytes.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// Element `i` of a raw storage, or `None` if it lies outside `raw`.
    fn element(self, raw: &[u8], i: usize) -> Option<f32> {
        fn le<const N: usize>(raw: &[u8], i: usize) -> Option<[u8; N]> {
            raw.get(i.checked_mul(N)?..)?.first_chunk::<N>().copied()
        }
        Some(match self {
            Self::F32 => f32::from_le_bytes(le(raw, i)?),
            Self::F16 => half::f16::from_le_bytes(le(raw, i)?).to_f32(),
            Self::BF16 => half::bf16::from_le_bytes(le(raw, i)?).to_f32(),
            Self::F64 => f64::from_le_bytes(le(raw, i)?) as f32,
            Self::I64 => i64::from_le_bytes(le(raw, i)?) as f32,
            Self::I32 => i32::from_le_bytes(le(raw, i)?) as f32,
            Self::I16 => i16::from_le_bytes(le(raw, i)?) as f32,
            Self::I8 => i8::from_le_bytes(le(raw, i)?) as f32,
            Self::U8 => f32::from(u8::from_le_bytes(le(raw, i)?)),
            Self::Bool => f32::from(u8::from(le::<1>(raw, i)?[0] != 0)),
        })
    }
}

/// Everything that can go wrong; each variant carries the byte offset it refers to.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("not a legacy PyTorch file (byte {offset}): {reason}")]
    NotLegacyFormat { offset: usize, reason: String },
    #[error("unexpected end of file at byte {offset}: needed {needed} bytes for {what}")]
    UnexpectedEof {
        offset: usize,
        needed: usize,
        what: &'static str,
    },
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnsupportedOpcode { opcode: u8, offset: usize },
    #[error("malformed pickle at byte {offset}: {reason}")]
    Pickle { offset: usize, reason: String },
    #[error("unsupported call of `{name}` at byte {offset}")]
    UnsupportedGlobal { name: String, offset: usize },
    #[error("storage `{key}` (byte {offset}): {reason}")]
    Storage {
        key: String,
        offset: usize,
        reason: String,
    },
    #[error("tensor `{name}` (pickled at byte {offset}): {reason}")]
    Tensor {
        name: String,
        offset: usize,
        reason: String,
    },
}

fn pickle_err(offset: usize, reason: impl Into<String>) -> PthError {
    PthError::Pickle {
        offset,
        reason: reason.into(),
    }
}

/// Parses a legacy `.pth` file holding a state dict (name -> tensor), returning the
/// tensors in file order, each gathered into contiguous row-major `f32`.
pub fn read_legacy_state_dict(bytes: &[u8]) -> Result<Vec<TorchTensor>, PthError> {
    let not_legacy = |offset, reason: &str| PthError::NotLegacyFormat {
        offset,
        reason: reason.into(),
    };
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(not_legacy(
            0,
            "this is a zip archive (the newer torch.save format)",
        ));
    }
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut heap = Heap::default();

    match unpickle(&mut r, &mut heap) {
        Ok(Value::Int(MAGIC)) => {}
        Ok(_) => return Err(not_legacy(0, "first pickle is not the legacy magic number")),
        Err(e) => return Err(not_legacy(0, &format!("no magic number pickle: {e}"))),
    }
    let at = r.pos;
    if !matches!(unpickle(&mut r, &mut heap)?, Value::Int(PROTOCOL_VERSION)) {
        return Err(not_legacy(at, "protocol version is not 1001"));
    }
    let at = r.pos;
    if let Value::Dict(d) = unpickle(&mut r, &mut heap)? {
        let big_endian = heap.dicts[d].iter().any(|(k, v)| {
            matches!((k, v), (Value::Str(k), Value::Bool(false)) if &**k == "little_endian")
        });
        if big_endian {
            return Err(not_legacy(at, "sys_info says big-endian; unsupported"));
        }
    }

    let root_at = r.pos;
    let root = unpickle(&mut r, &mut heap)?;
    let Value::Dict(root) = root else {
        let reason = format!("top-level object is {}, not a dict", root.describe());
        return Err(pickle_err(root_at, reason));
    };
    let mut entries: Vec<(Rc<str>, usize)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &heap.dicts[root] {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            let (k, v) = (k.describe(), v.describe());
            let reason = format!("state dict entry {k} -> {v} is not name -> tensor");
            return Err(pickle_err(root_at, reason));
        };
        // torch never writes a key twice; Python would silently keep the last one.
        if !seen.insert(name.clone()) {
            return Err(pickle_err(
                root_at,
                format!("tensor name {name:?} repeated"),
            ));
        }
        entries.push((name.clone(), *t));
    }

    let keys_at = r.pos;
    let keys = match unpickle(&mut r, &mut heap)? {
        Value::List(l) => heap.seqs[l].clone(),
        other => {
            let reason = format!("storage key list is {}, not a list", other.describe());
            return Err(pickle_err(keys_at, reason));
        }
    };

    // Data section: one record per key, in the order of the key list.
    let mut raw: Vec<Option<&[u8]>> = vec![None; heap.storages.len()];
    for key in &keys {
        let at = r.pos;
        let storage_err = |key: &str, reason: String| PthError::Storage {
            key: key.into(),
            offset: at,
            reason,
        };
        let Value::Str(key) = key else {
            return Err(storage_err(
                "?",
                format!("key list holds {}", key.describe()),
            ));
        };
        let Some(&id) = heap.storage_ids.get(key) else {
            return Err(storage_err(
                key,
                "listed but never referenced by a tensor".into(),
            ));
        };
        let info = &heap.storages[id];
        if raw[id].is_some() {
            return Err(storage_err(key, "listed twice".into()));
        }
        let count = u64::from_le_bytes(r.array("storage element count")?);
        if count != info.numel {
            return Err(storage_err(
                key,
                format!("record has {count} elements, pickle said {}", info.numel),
            ));
        }
        let nbytes = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(info.dtype.size()))
            .ok_or_else(|| storage_err(key, format!("{count} elements is too large")))?;
        raw[id] = Some(r.take(nbytes, "storage data")?);
    }
    // Trailing bytes after the last record are ignored, as torch does.

    let mut budget = u64::try_from(bytes.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(ELEMENTS_PER_FILE_BYTE);
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let info = &heap.tensors[t];
        let tensor_err = |reason: String| PthError::Tensor {
            name: name.to_string(),
            offset: info.at,
            reason,
        };
        let storage = &heap.storages[info.storage];
        let raw = raw[info.storage]
            .ok_or_else(|| tensor_err(format!("storage `{}` has no data record", storage.key)))?;
        let data = gather(info, storage, raw, &mut budget).map_err(tensor_err)?;
        let shape = info
            .size
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| tensor_err("dimension too large".into())));
        let shape = shape.collect::<Result<_, _>>()?;
        out.push(TorchTensor {
            name: name.to_string(),
            dtype: storage.dtype,
            shape,
            data,
        });
    }
    Ok(out)
}

/// Copies a (possibly strided) view of a storage into a row-major `f32` vector.
fn gather(
    t: &TensorInfo,
    s: &StorageInfo,
    raw: &[u8],
    budget: &mut u64,
) -> Result<Vec<f32>, String> {
    if t.size.len() != t.stride.len() {
        return Err(format!(
            "{} sizes but {} strides",
            t.size.len(),
            t.stride.len()
        ));
    }
    let numel = t.size.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let numel = numel.ok_or("element count overflows")?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    // Highest storage index the view touches; every index visited lies in
    // [offset, last], so the walk below cannot overflow once this is checked.
    let mut last = t.offset;
    for (&d, &st) in t.size.iter().zip(&t.stride) {
        last = (d - 1)
            .checked_mul(st)
            .and_then(|x| x.checked_add(last))
            .ok_or("extent overflows")?;
    }
    if last >= s.numel {
        return Err(format!(
            "needs storage element {last} but `{}` has only {}",
            s.key, s.numel
        ));
    }
    *budget = budget.checked_sub(numel).ok_or_else(|| {
        format!("output larger than {ELEMENTS_PER_FILE_BYTE} elements per byte of the file")
    })?;
    let as_usize =
        |x: u64| usize::try_from(x).map_err(|_| "size exceeds address space".to_string());
    let mut data = Vec::with_capacity(as_usize(numel)?);
    let mut idx = vec![0u64; t.size.len()];
    let mut pos = t.offset;
    loop {
        let v = s.dtype.element(raw, as_usize(pos)?);
        data.push(v.ok_or_else(|| format!("storage element {pos} is outside the data record"))?);
        // Odometer increment, last dimension fastest (row-major).
        let mut d = t.size.len();
        loop {
            if d == 0 {
                return Ok(data);
            }
            d -= 1;
            if idx[d] + 1 < t.size[d] {
                idx[d] += 1;
                pos += t.stride[d];
                break;
            }
            pos -= t.stride[d] * idx[d];
            idx[d] = 0;
        }
    }
}

struct StorageInfo {
    key: Rc<str>,
    dtype: DType,
    numel: u64,
}

struct TensorInfo {
    storage: usize,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
    /// Byte offset of the REDUCE that built it, for error messages.
    at: usize,
}

/// Callables the pickle may name with GLOBAL.
#[derive(Clone, Debug)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    StorageClass(DType),
    /// Anything else: allowed on the stack, an error only if actually called.
    Other(Rc<str>),
}

/// A pickle value. Containers are indices into [`Heap`] arenas rather than
/// owned trees: clones (memo gets) are O(1), mutation through the memo is shared
/// as in Python, and dropping deeply nested input cannot overflow the stack.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Rc<str>),
    Global(Global),
    Tuple(usize),
    List(usize),
    Dict(usize),
    Storage(usize),
    Tensor(usize),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("string {:?}", s.chars().take(80).collect::<String>()),
            Value::Global(g) => format!("global {}", g.name()),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
        }
    }

    fn to_u64(&self, what: &str) -> Result<u64, String> {
        match self {
            Value::Int(i) => {
                u64::try_from(*i).map_err(|_| format!("{what} {i} is negative or too large"))
            }
            v => Err(format!("{what} is {}, expected an int", v.describe())),
        }
    }
}

#[derive(Default)]
struct Heap {
    seqs: Vec<Vec<Value>>, // tuples and lists
    dicts: Vec<Vec<(Value, Value)>>,
    storages: Vec<StorageInfo>,
    storage_ids: HashMap<Rc<str>, usize>,
    tensors: Vec<TensorInfo>,
}

impl Heap {
    fn seq(&mut self, items: Vec<Value>) -> usize {
        self.seqs.push(items);
        self.seqs.len() - 1
    }

    fn tuple_items(&self, v: &Value, what: &str) -> Result<&[Value], String> {
        match v {
            Value::Tuple(t) => Ok(&self.seqs[*t]),
            v => Err(format!("{what} is {}, expected a tuple", v.describe())),
        }
    }

    fn u64_tuple(&self, v: &Value, what: &str) -> Result<Vec<u64>, String> {
        self.tuple_items(v, what)?
            .iter()
            .map(|x| x.to_u64(what))
            .collect()
    }

    /// BINPERSID: `('storage', StorageClass, key, location, numel, view_metadata)`.
    /// Storages are interned by key so tensors sharing one get the same id.
    fn persistent_load(&mut self, pid: &Value) -> Result<Value, String> {
        let [
            Value::Str(kind),
            Value::Global(class),
            Value::Str(key),
            _location,
            numel,
            view,
        ] = self.tuple_items(pid, "persistent id")?
        else {
            return Err(
                "persistent id is not a 6-tuple ('storage', class, key, location, numel, view)"
                    .into(),
            );
        };
        let Global::StorageClass(dtype) = class else {
            return Err(format!(
                "persistent id names {}, not a storage class",
                class.name()
            ));
        };
        if &**kind != "storage" || !matches!(view, Value::None) {
            return Err(format!(
                "unsupported persistent id kind {kind:?} or storage view"
            ));
        }
        let (dtype, numel, key) = (*dtype, numel.to_u64("storage numel")?, key.clone());
        if let Some(&id) = self.storage_ids.get(&key) {
            let s = &self.storages[id];
            if s.dtype != dtype || s.numel != numel {
                return Err(format!(
                    "storage {key:?} is declared twice with different type or size"
                ));
            }
            return Ok(Value::Storage(id));
        }
        self.storage_ids.insert(key.clone(), self.storages.len());
        self.storages.push(StorageInfo { key, dtype, numel });
        Ok(Value::Storage(self.storages.len() - 1))
    }

    /// REDUCE: calls one of the few globals a state dict needs.
    fn call(&mut self, func: &Value, args: &Value, at: usize) -> Result<Value, PthError> {
        let perr = |reason: String| pickle_err(at, reason);
        let args = self.tuple_items(args, "REDUCE arguments").map_err(perr)?;
        let Value::Global(g) = func else {
            return Err(perr(format!("REDUCE calls {}", func.describe())));
        };
        match g {
            Global::OrderedDict if args.is_empty() => {
                self.dicts.push(Vec::new());
                Ok(Value::Dict(self.dicts.len() - 1))
            }
            // _rebuild_tensor(storage, offset, size, stride) and _rebuild_tensor_v2 with
            // (requires_grad, backward_hooks[, metadata]) appended; the extras are ignored.
            Global::RebuildTensor => {
                let [Value::Storage(storage), offset, size, stride, ..] = args else {
                    return Err(perr(
                        "_rebuild_tensor expects (storage, offset, size, stride, ...)".into(),
                    ));
                };
                let info = TensorInfo {
                    storage: *storage,
                    offset: offset.to_u64("storage offset").map_err(perr)?,
                    size: self.u64_tuple(size, "size").map_err(perr)?,
                    stride: self.u64_tuple(stride, "stride").map_err(perr)?,
                    at,
                };
                self.tensors.push(info);
                Ok(Value::Tensor(self.tensors.len() - 1))
            }
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(perr("_rebuild_parameter expects a tensor".into())),
            },
            g => Err(PthError::UnsupportedGlobal {
                name: g.name(),
                offset: at,
            }),
        }
    }
}

impl Global {
    fn name(&self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensor => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::StorageClass(d) => {
                let class = STORAGE_CLASSES.iter().find(|(_, t)| t == d);
                format!("torch.{}", class.map_or("?", |(name, _)| name))
            }
            Global::Other(name) => name.to_string(),
        }
    }
}

fn resolve_global(module: &str, name: &str) -> Global {
    match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", n) if let Some(&(_, dtype)) = STORAGE_CLASSES.iter().find(|(c, _)| *c == n) => {
            Global::StorageClass(dtype)
        }
        _ => Global::Other(format!("{module}.{name}").into()),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PthError> {
        let eof = PthError::UnexpectedEof {
            offset: self.pos,
            needed: n,
            what,
        };
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or(eof)?;
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PthError> {
        let at = self.pos;
        let s = self.take(N, what)?;
        s.first_chunk().copied().ok_or(PthError::UnexpectedEof {
            offset: at,
            needed: N,
            what,
        })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PthError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PthError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A newline-terminated ASCII line (GLOBAL's module and name).
    fn line(&mut self, what: &'static str) -> Result<String, PthError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PthError::UnexpectedEof {
                offset: self.pos,
                needed: rest.len() + 1,
                what,
            })?;
        let s = self.take(n + 1, what)?;
        Ok(s.iter().take(n).map(|&b| char::from(b)).collect())
    }

    fn utf8(&mut self, n: usize, at: usize) -> Result<Value, PthError> {
        let s = std::str::from_utf8(self.take(n, "string")?)
            .map_err(|e| pickle_err(at, format!("invalid UTF-8: {e}")))?;
        Ok(Value::Str(s.into()))
    }
}

/// Runs one pickle (up to and including STOP) and returns its result.
fn unpickle(r: &mut Reader, heap: &mut Heap) -> Result<Value, PthError> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new(); // stack lengths at each MARK
    let mut memo: HashMap<u32, Value> = HashMap::new();
    loop {
        let at = r.pos;
        let op = r.u8("pickle opcode")?;
        let perr = |reason: &str| pickle_err(at, reason);
        // Pops never reach below the innermost MARK, as in CPython's metastack.
        macro_rules! floor {
            () => {
                marks.last().copied().unwrap_or(0)
            };
        }
        macro_rules! pop {
            () => {
                match stack.len() > floor!() {
                    true => stack.pop().ok_or_else(|| perr("stack underflow"))?,
                    false => return Err(perr("stack underflow")),
                }
            };
        }
        macro_rules! top {
            () => {
                match stack.len() > floor!() {
                    true => stack.last_mut().ok_or_else(|| perr("stack underflow"))?,
                    false => return Err(perr("stack underflow")),
                }
            };
        }
        macro_rules! pop_mark {
            () => {{
                let m = marks.pop().ok_or_else(|| perr("no MARK on the stack"))?;
                stack.split_off(m)
            }};
        }
        let pushed = match op {
            0x80 => {
                // PROTO: everything implemented here exists in protocols 2..=5.
                match r.u8("protocol")? {
                    0..=5 => continue,
                    p => return Err(perr(&format!("unknown pickle protocol {p}"))),
                }
            }
            0x95 => {
                r.take(8, "frame length")?; // FRAME is only a read-ahead hint
                continue;
            }
            b'c' => {
                let module = r.line("GLOBAL module")?;
                let name = r.line("GLOBAL name")?;
                Value::Global(resolve_global(&module, &name))
            }
            b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'q' => u32::from(r.u8("memo index")?),
                    b'r' => r.u32("memo index")?,
                    _ => u32::try_from(memo.len()).map_err(|_| perr("memo too large"))?,
                };
                let v = top!().clone();
                memo.insert(i, v);
                continue;
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    u32::from(r.u8("memo index")?)
                } else {
                    r.u32("memo index")?
                };
                memo.get(&i)
                    .cloned()
                    .ok_or_else(|| perr(&format!("memo slot {i} is empty")))?
            }
            b'}' | b'd' | b'u' => {
                let items = if op == b'}' { Vec::new() } else { pop_mark!() };
                if items.len() % 2 != 0 {
                    return Err(perr("odd number of items for a dict"));
                }
                let mut it = items.into_iter();
                let pairs =
                    std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect::<Vec<_>>();
                if op == b'u' {
                    let Value::Dict(d) = *top!() else {
                        return Err(perr("SETITEMS on a non-dict"));
                    };
                    heap.dicts[d].extend(pairs);
                    continue;
                }
                heap.dicts.push(pairs);
                Value::Dict(heap.dicts.len() - 1)
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                let Value::Dict(d) = *top!() else {
                    return Err(perr("SETITEM on a non-dict"));
                };
                heap.dicts[d].push((k, v));
                continue;
            }
            b']' => Value::List(heap.seq(Vec::new())),
            b'l' => {
                let items = pop_mark!();
                Value::List(heap.seq(items))
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop!()]
                } else {
                    pop_mark!()
                };
                let Value::List(l) = *top!() else {
                    return Err(perr("APPEND on a non-list"));
                };
                heap.seqs[l].extend(items);
                continue;
            }
            b')' => Value::Tuple(heap.seq(Vec::new())),
            b't' => {
                let items = pop_mark!();
                Value::Tuple(heap.seq(items))
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < floor!() + n {
                    return Err(perr("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                Value::Tuple(heap.seq(items))
            }
            b'(' => {
                marks.push(stack.len());
                continue;
            }
            b'J' => Value::Int(i32::from_le_bytes(r.array("BININT")?).into()),
            b'K' => Value::Int(r.u8("BININT1")?.into()),
            b'M' => Value::Int(u16::from_le_bytes(r.array("BININT2")?).into()),
            0x8a => {
                // LONG1: n-byte little-endian two's complement (the magic number is 10 bytes).
                let n = usize::from(r.u8("LONG1 length")?);
                let bytes = r.take(n, "LONG1 value")?;
                if n > 16 {
                    return Err(perr(&format!("{n}-byte integer is too large")));
                }
                let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                    0xff
                } else {
                    0
                };
                let mut buf = [fill; 16];
                buf.iter_mut().zip(bytes).for_each(|(d, &s)| *d = s);
                Value::Int(i128::from_le_bytes(buf))
            }
            b'G' => Value::Float(f64::from_be_bytes(r.array("BINFLOAT")?)), // big-endian!
            b'X' => {
                let n = r.u32("BINUNICODE length")? as usize;
                r.utf8(n, at)?
            }
            0x8c => {
                let n = usize::from(r.u8("SHORT_BINUNICODE length")?);
                r.utf8(n, at)?
            }
            b'T' | b'U' => {
                // Python 2 byte strings; decoded as Latin-1 so any byte is valid.
                let n = if op == b'T' {
                    let n = i32::from_le_bytes(r.array("BINSTRING length")?);
                    usize::try_from(n).map_err(|_| perr("negative string length"))?
                } else {
                    usize::from(r.u8("SHORT_BINSTRING length")?)
                };
                Value::Str(
                    r.take(n, "string")?
                        .iter()
                        .map(|&b| char::from(b))
                        .collect::<String>()
                        .into(),
                )
            }
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'Q' => {
                let pid = pop!();
                heap.persistent_load(&pid).map_err(|e| perr(&e))?
            }
            b'R' => {
                let args = pop!();
                let func = pop!();
                heap.call(&func, &args, at)?
            }
            b'b' => {
                // BUILD: OrderedDict's state is its __dict__ (torch's `_metadata`); not needed.
                let _state = pop!();
                if !matches!(top!(), Value::Dict(_)) {
                    return Err(perr("BUILD on something other than a dict"));
                }
                continue;
            }
            b'.' => return Ok(pop!()),
            _ => {
                return Err(PthError::UnsupportedOpcode {
                    opcode: op,
                    offset: at,
                });
            }
        };
        stack.push(pushed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal legacy file holding one tensor `t` over a storage with key "0".
    fn tiny(
        class: &str,
        numel: u32,
        data: &[u8],
        offset: u32,
        size: &[u32],
        stride: &[u32],
    ) -> Vec<u8> {
        let mut f = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}.".to_vec();
        let s = |f: &mut Vec<u8>, x: &str| {
            f.push(b'X');
            f.extend((x.len() as u32).to_le_bytes());
            f.extend(x.as_bytes());
        };
        let i = |f: &mut Vec<u8>, x: u32| {
            f.push(b'J');
            f.extend(x.to_le_bytes());
        };
        f.extend(b"\x80\x02ccollections\nOrderedDict\nq\x00)R(");
        s(&mut f, "t");
        f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        s(&mut f, "storage");
        f.extend(format!("ctorch\n{class}\n").as_bytes());
        s(&mut f, "0");
        s(&mut f, "cpu");
        i(&mut f, numel);
        f.extend(b"NtQ");
        i(&mut f, offset);
        f.push(b'(');
        size.iter().for_each(|&d| i(&mut f, d));
        f.extend(b"t(");
        stride.iter().for_each(|&d| i(&mut f, d));
        f.extend(b"t\x89h\x00)RtRu}b.\x80\x02](");
        s(&mut f, "0");
        f.extend(b"e.");
        f.extend(u64::from(numel).to_le_bytes());
        f.extend(data);
        f
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn strided_view_with_offset_is_gathered() {
        let file = tiny(
            "FloatStorage",
            6,
            &f32s(&[0., 1., 2., 3., 4., 5.]),
            1,
            &[2, 2],
            &[1, 2],
        );
        let t = read_legacy_state_dict(&file).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].name.as_str(), t[0].shape.as_slice()),
            ("t", &[2, 2][..])
        );
        assert_eq!(t[0].data, [1., 3., 2., 4.]);
    }

    #[test]
    fn other_dtypes_convert_to_f32() {
        let h: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let t = read_legacy_state_dict(&tiny("HalfStorage", 2, &h, 0, &[2], &[1])).unwrap();
        assert_eq!(
            (t[0].dtype, t[0].data.as_slice()),
            (DType::F16, &[1.5, -2.0][..])
        );
        let d: Vec<u8> = [0.25f64, 1e10]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = read_legacy_state_dict(&tiny("DoubleStorage", 2, &d, 0, &[2], &[1])).unwrap();
        assert_eq!(
            (t[0].dtype, t[0].data.as_slice()),
            (DType::F64, &[0.25, 1e10][..])
        );
        let l: Vec<u8> = [-7i64, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = read_legacy_state_dict(&tiny("LongStorage", 2, &l, 1, &[], &[])).unwrap();
        assert_eq!(
            (t[0].dtype, t[0].shape.len(), t[0].data.as_slice()),
            (DType::I64, 0, &[3.0][..])
        );
        let i: Vec<u8> = [5i32, 6].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = read_legacy_state_dict(&tiny("IntStorage", 2, &i, 0, &[2, 0], &[1, 1])).unwrap();
        assert_eq!(
            (t[0].dtype, t[0].shape.as_slice(), t[0].data.len()),
            (DType::I32, &[2, 0][..], 0)
        );
    }

    #[test]
    fn malformed_tensors_are_errors() {
        let data = f32s(&[0.; 4]);
        let err = |f: Vec<u8>| read_legacy_state_dict(&f).unwrap_err().to_string();
        // View reaching past its storage.
        let e = err(tiny("FloatStorage", 4, &data, 0, &[5], &[1]));
        assert!(e.contains("tensor `t`") && e.contains("has only 4"), "{e}");
        let e = err(tiny("FloatStorage", 4, &data, 2, &[2, 2], &[1, 1]));
        assert!(e.contains("has only 4"), "{e}");
        // Element count overflowing u64.
        let big = i32::MAX as u32;
        let e = err(tiny(
            "FloatStorage",
            4,
            &data,
            0,
            &[big, big, big],
            &[0, 0, 0],
        ));
        assert!(e.contains("overflows"), "{e}");
        // Zero strides may not inflate a small file into a huge allocation.
        let e = err(tiny("FloatStorage", 4, &data, 0, &[big, big], &[0, 0]));
        assert!(e.contains("4 elements per byte of the file"), "{e}");
        // Data record shorter than declared, and wrong element count.
        let e = err(tiny("FloatStorage", 4, &data[..15], 0, &[4], &[1]));
        assert!(
            e.contains("end of file") && e.contains("storage data"),
            "{e}"
        );
        let mut f = tiny("FloatStorage", 4, &data, 0, &[4], &[1]);
        let at = f.len() - 24;
        f[at] = 3;
        assert!(err(f).contains("record has 3 elements"));
        // Unknown storage class, unknown callable.
        assert!(err(tiny("QInt8Storage", 4, &data, 0, &[4], &[1])).contains("not a storage class"));
    }

    #[test]
    fn bad_headers_and_opcodes_are_errors() {
        let good = tiny("FloatStorage", 1, &f32s(&[1.0]), 0, &[1], &[1]);
        assert!(read_legacy_state_dict(&good).is_ok());
        for bad in [&b""[..], b"PK\x03\x04rest", b"\x80\x02K\x05."] {
            assert!(matches!(
                read_legacy_state_dict(bad),
                Err(PthError::NotLegacyFormat { .. })
            ));
        }
        let mut f = good.clone();
        f[23] = b'P'; // sys_info's EMPTY_DICT -> PERSID, which is not implemented
        match read_legacy_state_dict(&f) {
            Err(PthError::UnsupportedOpcode {
                opcode: b'P',
                offset: 23,
            }) => {}
            other => panic!("{other:?}"),
        }
        let mut f = good.clone();
        f[18] = 0xe8; // protocol version 1000
        assert!(matches!(
            read_legacy_state_dict(&f),
            Err(PthError::NotLegacyFormat { offset: 15, .. })
        ));
        for cut in 0..good.len() {
            assert!(read_legacy_state_dict(&good[..cut]).is_err(), "cut {cut}");
        }
    }
}
