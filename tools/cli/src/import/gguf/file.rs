//! The GGUF container (llama.cpp's model file): header, metadata, tensor infos, data.
//!
//! Layout (little-endian): magic `GGUF`, version (2 or 3), tensor count (u64), metadata count
//! (u64), the metadata key/values, the tensor infos (name, dims innermost first, ggml type,
//! offset into the data section), padding to `general.alignment` (default 32), the data.
//! Every length, count and offset is checked against the file before use: bad files give an
//! error, never a panic or a huge allocation.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail, ensure};

use super::dequant::{GgmlType, type_name};
use crate::import::RawTensor;

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Default alignment of the data section and of each tensor, bytes.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced).
    Str(String),
    /// Array of values of one type, kept as its bytes in the file and decoded on demand.
    Array(Array),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl Value {
    /// Integer value, if this is a non-negative integer.
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

    /// Float value of a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A metadata array: its element type, length and the bytes of its elements as stored (so a
/// large array costs its size in the file, not an enum per element; arrays nobody reads are
/// never decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// GGUF value type of the elements.
    pub ty: u32,
    /// Number of elements.
    pub len: u64,
    /// Metadata key, for error messages.
    key: String,
    depth: u32,
    raw: Vec<u8>,
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    /// `true` for an array of no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, decoded one at a time (their bytes were checked when the file was
    /// parsed, so this does not fail on a parsed file).
    pub fn values(&self) -> impl Iterator<Item = Result<Value>> + '_ {
        let mut r = Reader {
            b: &self.raw,
            pos: 0,
        };
        (0..self.len).map(move |_| r.value(self.ty, &self.key, self.depth + 1))
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// llama.cpp name (e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, innermost (columns) first, as in the file.
    pub dims: Vec<u64>,
    /// ggml type code.
    pub ty: u32,
    /// Offset of the data from the start of the data section, bytes.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// The ggml type, if this reader knows it.
    ///
    /// # Errors
    /// When the type code is not one [`GgmlType`] has.
    pub fn ggml_type(&self) -> Result<GgmlType> {
        GgmlType::from_code(self.ty)
            .ok_or_else(|| anyhow!("tensor {:?}: unsupported type {}", self.name, self.ty))
    }

    /// Shape outermost first (topkit's order): `[rows, cols]` for a matrix.
    ///
    /// # Errors
    /// When a dimension does not fit a `usize`.
    pub fn shape(&self) -> Result<Vec<usize>> {
        self.dims
            .iter()
            .rev()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| anyhow!("tensor {}: dimension {d} too large", self.name))
            })
            .collect()
    }
}

/// A parsed GGUF file (the bytes stay with the caller).
#[derive(Debug, Clone)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section, bytes.
    pub alignment: u64,
    /// Offset of the data section in the file, bytes.
    pub data_start: u64,
    /// Position in `tensors` of each tensor name (lookups in O(1), not a scan per name).
    index: HashMap<String, usize>,
    /// Position in `kv` of each key (the first, when a key repeats).
    kv_index: HashMap<String, usize>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| anyhow!("{what}: length {n} too large"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                anyhow!(
                    "truncated file: {what} needs {n} bytes at offset {}, the file has {}",
                    self.pos,
                    self.b.len()
                )
            })?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or_else(|| anyhow!("{what}: out of bounds"))?;
        self.pos = end;
        Ok(s)
    }
    fn remaining(&self) -> u64 {
        self.b.len().saturating_sub(self.pos) as u64
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        s.try_into().map_err(|_| anyhow!("{what}: short read"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let s = self.take(n, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
    /// A count of items each at least `min_bytes` long: never more than the rest of the file.
    fn count(&mut self, what: &str, min_bytes: u64) -> Result<u64> {
        let n = self.u64(what)?;
        ensure!(
            n.checked_mul(min_bytes)
                .is_some_and(|b| b <= self.remaining()),
            "{what} {n} is more than the rest of the file ({} bytes) can hold",
            self.remaining()
        );
        Ok(n)
    }
    /// Moves past one value of type `ty`: a string without copying it, anything else as
    /// `value` reads it (with the same checks).
    fn skip(&mut self, ty: u32, key: &str, depth: u32) -> Result<()> {
        if ty == 8 {
            let n = self.u64(key)?;
            self.take(n, key)?;
        } else {
            self.value(ty, key, depth)?;
        }
        Ok(())
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(key)?[0]),
            1 => Value::I8(self.arr::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => match self.arr::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("metadata {key:?}: bool byte {b} is neither 0 nor 1"),
            },
            8 => Value::Str(self.string(key)?),
            9 => {
                ensure!(depth < 4, "metadata {key:?}: arrays nested too deep");
                let ety = self.u32(key)?;
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    _ => bail!("metadata {key:?}: unknown array element type {ety}"),
                };
                let n = self.count(&format!("metadata {key:?} array length"), min)?;
                let start = self.pos;
                if ety == 8 || ety == 9 {
                    // Variable-size elements: walk them (strings are skipped, not copied).
                    for _ in 0..n {
                        self.skip(ety, key, depth + 1)?;
                    }
                } else {
                    self.take(n * min, key)?;
                }
                Value::Array(Array {
                    ty: ety,
                    len: n,
                    key: key.to_owned(),
                    depth,
                    raw: self.b.get(start..self.pos).unwrap_or_default().to_vec(),
                })
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(key)?)),
            _ => bail!("metadata {key:?}: unknown value type {ty}"),
        })
    }
}

impl Gguf {
    /// Parses the header, metadata and tensor infos of `bytes`, checking every tensor's data
    /// range against the file.
    ///
    /// # Errors
    /// When the magic or version is wrong, a count, length or value type is invalid or runs past
    /// the end of the file, a tensor appears twice, has a zero dimension, an unsupported type,
    /// rows that are not whole blocks, or data that is misaligned or beyond the file.
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        let mut r = Reader { b: bytes, pos: 0 };
        let magic: [u8; 4] = r.arr("magic")?;
        ensure!(
            &magic == MAGIC,
            "not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"
        );
        let version = r.u32("version")?;
        ensure!(
            version == 2 || version == 3,
            "unsupported GGUF version {version} (supported: 2, 3)"
        );
        // Smallest tensor info: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
        let n_tensors = r.count("tensor count", 32)?;
        // Smallest key/value: empty key (8), type (4), one byte.
        let n_kv = r.count("metadata count", 13)?;
        let mut kv = Vec::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key {i}"))?;
            let ty = r.u32(&format!("type of metadata {key:?}"))?;
            let v = r.value(ty, &key, 0)?;
            kv.push((key, v));
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("name of tensor {i}"))?;
            let nd = r.u32(&format!("tensor {name:?} dimension count"))?;
            ensure!(
                (1..=4).contains(&nd),
                "tensor {name:?} has {nd} dimensions (1 to 4 allowed)"
            );
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(r.u64(&format!("tensor {name:?} dimensions"))?);
            }
            let ty = r.u32(&format!("tensor {name:?} type"))?;
            let offset = r.u64(&format!("tensor {name:?} offset"))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let mut kv_index = HashMap::with_capacity(kv.len());
        for (i, (k, _)) in kv.iter().enumerate() {
            kv_index.entry(k.clone()).or_insert(i);
        }
        let mut g = Gguf {
            version,
            kv,
            tensors,
            alignment: DEFAULT_ALIGNMENT,
            data_start: 0,
            index: HashMap::new(),
            kv_index,
        };
        if let Some(a) = g.get("general.alignment") {
            let a = a
                .as_u64()
                .ok_or_else(|| anyhow!("general.alignment is not an integer"))?;
            ensure!(
                a > 0 && a.is_power_of_two() && a <= 1 << 20,
                "general.alignment {a} is not a power of two up to 1 MiB"
            );
            g.alignment = a;
        }
        let pos = r.pos as u64;
        g.data_start = pos
            .checked_next_multiple_of(g.alignment)
            .ok_or_else(|| anyhow!("data offset overflows"))?;
        let file = bytes.len() as u64;
        let mut index = HashMap::with_capacity(g.tensors.len());
        for (i, t) in g.tensors.iter().enumerate() {
            ensure!(
                index.insert(t.name.clone(), i).is_none(),
                "tensor {:?} appears twice",
                t.name
            );
            ensure!(
                t.dims.iter().all(|&d| d > 0),
                "tensor {:?} has a zero dimension {:?}",
                t.name,
                t.dims
            );
            let ty = GgmlType::from_code(t.ty).ok_or_else(|| {
                anyhow!(
                    "tensor {:?} has ggml type {} ({}), which topkit cannot read (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)",
                    t.name,
                    t.ty,
                    type_name(t.ty)
                )
            })?;
            let n = t
                .elements()
                .ok_or_else(|| anyhow!("tensor {:?}: element count overflows", t.name))?;
            let (be, _) = ty.block();
            ensure!(
                t.dims[0].is_multiple_of(be as u64),
                "tensor {:?}: rows of {} elements are not whole {}-element blocks",
                t.name,
                t.dims[0],
                be
            );
            let len = ty
                .bytes_of(n)
                .ok_or_else(|| anyhow!("tensor {:?}: byte size overflows", t.name))?;
            ensure!(
                t.offset % g.alignment == 0,
                "tensor {:?}: offset {} is not a multiple of the alignment {}",
                t.name,
                t.offset,
                g.alignment
            );
            let end = g
                .data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(len))
                .ok_or_else(|| anyhow!("tensor {:?}: data range overflows", t.name))?;
            ensure!(
                end <= file,
                "tensor {:?}: data ends at byte {end}, beyond the end of the file ({file} bytes)",
                t.name
            );
        }
        g.index = index;
        Ok(g)
    }

    /// Metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.kv_index.get(key)?;
        self.kv.get(i).map(|(_, v)| v)
    }

    /// Metadata value of `key` as a non-negative integer.
    ///
    /// # Errors
    /// When `key` is missing or not a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .ok_or_else(|| anyhow!("metadata {key:?} is missing"))?
            .as_u64()
            .ok_or_else(|| anyhow!("metadata {key:?} is not a non-negative integer"))
    }

    /// Metadata value of `key` as a `usize`.
    ///
    /// # Errors
    /// When `key` is missing, not a non-negative integer or too large for a `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get_u64(key)?;
        usize::try_from(v).map_err(|_| anyhow!("metadata {key:?} = {v} is too large"))
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.index.get(name)?;
        self.tensors.get(i)
    }

    /// The raw bytes of `t` within the whole file `bytes`.
    ///
    /// # Errors
    /// When `t`'s type is unsupported or its data range overflows or lies beyond `bytes`.
    pub fn data<'b>(&self, bytes: &'b [u8], t: &TensorInfo) -> Result<&'b [u8]> {
        let ty = t.ggml_type()?;
        let n = t
            .elements()
            .ok_or_else(|| anyhow!("tensor {:?}: element count overflows", t.name))?;
        let len = ty
            .bytes_of(n)
            .ok_or_else(|| anyhow!("tensor {:?}: size overflows", t.name))?;
        let start = self
            .data_start
            .checked_add(t.offset)
            .ok_or_else(|| anyhow!("tensor {:?}: offset overflows", t.name))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| anyhow!("tensor {:?}: offset overflows", t.name))?;
        let (s, e) = (usize::try_from(start)?, usize::try_from(end)?);
        bytes
            .get(s..e)
            .ok_or_else(|| anyhow!("tensor {:?}: data {s}..{e} is beyond the file", t.name))
    }

    /// The stored bytes of the tensor named `name` within the whole file `bytes`.
    ///
    /// # Errors
    /// When there is no tensor `name`, or its type, shape or data range is invalid.
    pub fn raw<'a>(&self, bytes: &'a [u8], name: &'a str) -> Result<RawTensor<'a>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| anyhow!("tensor {name:?} is missing"))?;
        Ok(RawTensor {
            source: name,
            shape: t.shape()?,
            ty: t.ggml_type()?,
            data: self.data(bytes, t)?,
        })
    }
}

/// Whether `path` looks like a GGUF file (by its magic, or its extension when unreadable or
/// not a regular file: a FIFO is not opened, since opening one waits for a writer).
pub fn is_gguf(path: &std::path::Path) -> bool {
    let by_extension = || {
        path.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return false,
        Ok(m) if !m.is_file() => return by_extension(),
        _ => {}
    }
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
    {
        Ok(()) => &magic == MAGIC,
        Err(_) => by_extension(),
    }
}
