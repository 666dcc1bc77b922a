//! GGUF reader (llama.cpp's model file) for `topkit pack model.gguf`.
//!
//! Layout (little-endian): magic `GGUF`, version (2 or 3), tensor count (u64), metadata count
//! (u64), the metadata key/values, the tensor infos (name, dims innermost first, ggml type,
//! offset into the data section), padding to `general.alignment` (default 32), the data.
//! Every length, count and offset is checked against the file before use: bad files give an
//! error, never a panic or a huge allocation.

use anyhow::{Context, Result, anyhow, bail, ensure};
use half::f16;
use topkit::format::{FileConfig, Pooling, Special, TokenizerKind};
use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind};

use crate::writer::Tokenizer;

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Default alignment of the data section and of each tensor, bytes.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest packed context when `--max-seq` is not given (the KV cache is linear in it).
pub const DEFAULT_MAX_SEQ_CAP: usize = 2048;

/// ggml tensor types this reader dequantizes (ggml's type codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// Blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = (q - 8) d.
    Q4_0,
    /// Blocks of 32: f16 scale d, f16 min m, 16 bytes of 4-bit q; x = q d + m.
    Q4_1,
    /// Blocks of 32: f16 scale d, 32 i8 q; x = q d.
    Q8_0,
    /// bfloat16.
    Bf16,
}

impl GgmlType {
    /// The type of ggml code `code`, if supported.
    pub fn from_code(code: u32) -> Option<GgmlType> {
        Some(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes of `n` elements, or `None` when `n` is not a whole number of blocks or overflows.
    pub fn bytes_of(self, n: u64) -> Option<u64> {
        let (be, bb) = self.block();
        n.is_multiple_of(be as u64).then_some(())?;
        (n / be as u64).checked_mul(bb as u64)
    }
}

fn type_name(code: u32) -> &'static str {
    match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        30 => "BF16",
        _ => "unknown",
    }
}

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
    /// Array of values of one type.
    Array(Vec<Value>),
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

    /// Shape outermost first (topkit's order): `[rows, cols]` for a matrix.
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
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(v)
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
        let mut g = Gguf {
            version,
            kv,
            tensors,
            alignment: DEFAULT_ALIGNMENT,
            data_start: 0,
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
        let mut names = std::collections::HashSet::new();
        for t in &g.tensors {
            ensure!(
                names.insert(t.name.as_str()),
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
                    "tensor {:?} has ggml type {} ({}), which topkit cannot read (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)",
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
        Ok(g)
    }

    /// Metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .ok_or_else(|| anyhow!("metadata {key:?} is missing"))?
            .as_u64()
            .ok_or_else(|| anyhow!("metadata {key:?} is not a non-negative integer"))
    }

    fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get_u64(key)?;
        usize::try_from(v).map_err(|_| anyhow!("metadata {key:?} = {v} is too large"))
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of `t` within the whole file `bytes`.
    pub fn data<'b>(&self, bytes: &'b [u8], t: &TensorInfo) -> Result<&'b [u8]> {
        let ty = GgmlType::from_code(t.ty)
            .ok_or_else(|| anyhow!("tensor {:?}: unsupported type {}", t.name, t.ty))?;
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

    /// `t` dequantized to f32, row-major (the file's order: innermost dimension fastest).
    pub fn tensor_f32(&self, bytes: &[u8], t: &TensorInfo) -> Result<Vec<f32>> {
        let ty = GgmlType::from_code(t.ty)
            .ok_or_else(|| anyhow!("tensor {:?}: unsupported type {}", t.name, t.ty))?;
        let data = self.data(bytes, t)?;
        let n = usize::try_from(t.elements().unwrap_or(u64::MAX))?;
        dequantize(ty, data, n).with_context(|| format!("tensor {:?}", t.name))
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    match b.get(i..i + 2) {
        Some(&[x, y]) => f16::from_le_bytes([x, y]).to_f32(),
        _ => f32::NAN,
    }
}

/// Dequantizes `n` elements of type `ty` from `data` (exactly `ty.bytes_of(n)` bytes).
/// The arithmetic is ggml's (and gguf-py's): f16 scales widened to f32, then `q * d (+ m)`
/// in f32, so Q4_1 and Q8_0 weights come out bit-exact.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let need = ty
        .bytes_of(n as u64)
        .ok_or_else(|| anyhow!("{n} elements are not whole {:?} blocks", ty))?;
    ensure!(
        data.len() as u64 == need,
        "{ty:?}: {n} elements need {need} bytes, got {}",
        data.len()
    );
    let mut out = Vec::with_capacity(n);
    let (_, bb) = ty.block();
    match ty {
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(data.chunks_exact(2).map(|b| f16_at(b, 0))),
        GgmlType::Bf16 => out.extend(
            data.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for blk in data.chunks_exact(bb) {
                let d = f16_at(blk, 0);
                let (m, qs) = if ty == GgmlType::Q4_1 {
                    (f16_at(blk, 2), &blk[4..])
                } else {
                    (0.0, &blk[2..])
                };
                // Low nibbles are elements 0..16, high nibbles 16..32.
                for shift in [0u8, 4] {
                    for &q in qs {
                        let q = (q >> shift) & 0x0f;
                        out.push(if ty == GgmlType::Q4_1 {
                            f32::from(q) * d + m
                        } else {
                            (f32::from(q) - 8.0) * d
                        });
                    }
                }
            }
        }
        GgmlType::Q8_0 => {
            for blk in data.chunks_exact(bb) {
                let d = f16_at(blk, 0);
                out.extend(blk[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
    }
    Ok(out)
}

/// Undoes llama.cpp's row permutation of a Q or K projection (`rows` x `cols`, `heads`
/// heads): its converter interleaves the two halves of each head for GPT-J-style RoPE, while
/// topkit (like Hugging Face) rotates the first half of a head against the second half.
/// HF row `h*hd + i*hd/2 + j` is GGUF row `h*hd + 2j + i`.
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    ensure!(
        heads > 0 && rows.is_multiple_of(heads) && (rows / heads).is_multiple_of(2),
        "cannot undo the RoPE permutation: {rows} rows are not {heads} heads of an even size"
    );
    ensure!(
        values.len() == rows * cols,
        "unpermute: {} values for {rows}x{cols}",
        values.len()
    );
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let dst = (h * hd + i * half + j) * cols;
                let src = (h * hd + 2 * j + i) * cols;
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// One tensor to pack: topkit name, source name, how to transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufMapping {
    /// topkit name.
    pub name: String,
    /// GGUF name.
    pub source: String,
    /// Transpose the matrix (the FFN down projection).
    pub transpose: bool,
    /// Undo the RoPE row permutation with this many heads.
    pub unpermute_heads: Option<usize>,
}

/// What `topkit pack` needs from a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufSource {
    /// Configuration.
    pub config: FileConfig,
    /// Tokenizer from the `tokenizer.ggml.*` metadata.
    pub tokenizer: Tokenizer,
    /// Tensors to pack.
    pub mappings: Vec<GgufMapping>,
    /// GGUF tensors not packed.
    pub skipped: Vec<String>,
}

/// Reads the configuration, tokenizer and tensor mapping of a llama-architecture GGUF.
pub fn source(g: &Gguf, max_seq: Option<usize>) -> Result<GgufSource> {
    let arch = g
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("metadata general.architecture is missing"))?;
    ensure!(
        arch == "llama",
        "general.architecture {arch:?} is not supported (only \"llama\")"
    );
    let d_model = g.get_usize("llama.embedding_length")?;
    let n_heads = g.get_usize("llama.attention.head_count")?;
    let n_kv_heads = match g.get("llama.attention.head_count_kv") {
        Some(_) => g.get_usize("llama.attention.head_count_kv")?,
        None => n_heads,
    };
    ensure!(
        n_heads > 0 && d_model % n_heads == 0,
        "embedding_length {d_model} is not a multiple of head_count {n_heads}"
    );
    let head_dim = d_model / n_heads;
    if let Some(v) = g.get("llama.rope.dimension_count") {
        let rd = v.as_u64().unwrap_or(0);
        ensure!(
            rd == head_dim as u64,
            "llama.rope.dimension_count {rd} differs from the head size {head_dim} (partial RoPE is not supported)"
        );
    }
    let ctx = g.get_usize("llama.context_length")?;
    let max_seq = max_seq.unwrap_or(ctx.min(DEFAULT_MAX_SEQ_CAP));
    ensure!(
        (1..=ctx).contains(&max_seq),
        "--max-seq {max_seq} must be in 1..={ctx} (the model's context_length)"
    );
    let emb = g
        .tensor("token_embd.weight")
        .ok_or_else(|| anyhow!("tensor token_embd.weight is missing"))?;
    let vocab_size = match g.get("llama.vocab_size") {
        Some(_) => g.get_usize("llama.vocab_size")?,
        None => usize::try_from(*emb.dims.get(1).unwrap_or(&0))?,
    };
    let f = |k: &str, default: f64| -> Result<f32> {
        match g.get(k) {
            None => Ok(default as f32),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| anyhow!("metadata {k:?} is not a number")),
        }
    };
    let tie = g.tensor("output.weight").is_none();
    let model = ModelConfig {
        arch: Arch::Llama,
        vocab_size,
        d_model,
        n_layers: g.get_usize("llama.block_count")?,
        n_heads,
        n_kv_heads,
        head_dim,
        d_ff: g.get_usize("llama.feed_forward_length")?,
        max_seq,
        type_vocab_size: 0,
        norm: Norm::RmsNorm,
        norm_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        act: Activation::Silu,
        ffn: FfnKind::Gated,
        pos: PosKind::Rope,
        rope_theta: f("llama.rope.freq_base", 10000.0)?,
        causal: true,
        tie_embeddings: tie,
    };
    model
        .validate()
        .map_err(|e| anyhow!("GGUF metadata: {e}"))?;

    let mut mappings = Vec::new();
    let mut map =
        |source: String, name: String, transpose: bool, unpermute_heads: Option<usize>| {
            mappings.push(GgufMapping {
                name,
                source,
                transpose,
                unpermute_heads,
            })
        };
    map("token_embd.weight".into(), "tok_emb".into(), false, None);
    for i in 0..model.n_layers {
        let b = format!("blk.{i}");
        map(
            format!("{b}.attn_q.weight"),
            format!("l{i}.q.w"),
            false,
            Some(n_heads),
        );
        map(
            format!("{b}.attn_k.weight"),
            format!("l{i}.k.w"),
            false,
            Some(n_kv_heads),
        );
        map(
            format!("{b}.attn_v.weight"),
            format!("l{i}.v.w"),
            false,
            None,
        );
        map(
            format!("{b}.attn_output.weight"),
            format!("l{i}.o.w"),
            false,
            None,
        );
        map(
            format!("{b}.attn_norm.weight"),
            format!("l{i}.attn_norm.w"),
            false,
            None,
        );
        map(
            format!("{b}.ffn_gate.weight"),
            format!("l{i}.ffn.gate.w"),
            false,
            None,
        );
        map(
            format!("{b}.ffn_up.weight"),
            format!("l{i}.ffn.up.w"),
            false,
            None,
        );
        map(
            format!("{b}.ffn_down.weight"),
            format!("l{i}.ffn.down_t.w"),
            true,
            None,
        );
        map(
            format!("{b}.ffn_norm.weight"),
            format!("l{i}.ffn_norm.w"),
            false,
            None,
        );
    }
    map(
        "output_norm.weight".into(),
        "final_norm.w".into(),
        false,
        None,
    );
    if !tie {
        map("output.weight".into(), "lm_head.w".into(), false, None);
    }
    for m in &mappings {
        ensure!(
            g.tensor(&m.source).is_some(),
            "tensor {:?} (topkit name {}) is missing from the GGUF file",
            m.source,
            m.name
        );
    }
    let used: std::collections::HashSet<&str> =
        mappings.iter().map(|m| m.source.as_str()).collect();
    let skipped = g
        .tensors
        .iter()
        .filter(|t| !used.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    let tokenizer = tokenizer(g, vocab_size)?;
    Ok(GgufSource {
        config: FileConfig {
            model,
            pooling: Pooling::None,
            normalize: false,
        },
        tokenizer,
        mappings,
        skipped,
    })
}

/// The byte-level BPE tokenizer of `tokenizer.ggml.model = "gpt2"` (no tokenizer when the
/// file has none).
fn tokenizer(g: &Gguf, vocab_size: usize) -> Result<Tokenizer> {
    let Some(model) = g.get("tokenizer.ggml.model") else {
        return Ok(Tokenizer::none());
    };
    let model = model.as_str().unwrap_or("");
    ensure!(
        model == "gpt2",
        "tokenizer.ggml.model {model:?} is not supported (only \"gpt2\", byte-level BPE)"
    );
    let strings = |key: &str| -> Result<Vec<String>> {
        match g.get(key) {
            Some(Value::Array(v)) => v
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("{key} holds a non-string"))
                })
                .collect(),
            Some(_) => bail!("{key} is not an array"),
            None => bail!("{key} is missing"),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    ensure!(
        tokens.len() <= vocab_size,
        "the tokenizer has {} tokens, more than the model's vocab_size {vocab_size}",
        tokens.len()
    );
    let index: std::collections::HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let merges = strings("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(r, m)| {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| anyhow!("merge {r} {m:?} is not two tokens separated by a space"))?;
            let id = |s: &str| {
                index
                    .get(s)
                    .copied()
                    .ok_or_else(|| anyhow!("merge {r} {m:?} names {s:?}, which is not a token"))
            };
            Ok((id(a)?, id(b)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = tokens.len() as u64;
    let special = |key: &str| -> Option<u32> {
        g.get(key)
            .and_then(Value::as_u64)
            .filter(|&id| id < n)
            .and_then(|id| u32::try_from(id).ok())
    };
    let mut specials = [None; topkit::format::SPECIALS];
    specials[Special::Unk as usize] = special("tokenizer.ggml.unknown_token_id");
    specials[Special::Bos as usize] = special("tokenizer.ggml.bos_token_id");
    specials[Special::Eos as usize] = special("tokenizer.ggml.eos_token_id");
    specials[Special::Pad as usize] = special("tokenizer.ggml.padding_token_id");
    let pre = match g
        .get("tokenizer.ggml.pre")
        .map(|v| v.as_str().unwrap_or("?"))
    {
        None | Some("gpt-2") | Some("gpt2") => topkit::format::BPE_PRE_GPT2,
        Some("smollm") => topkit::format::BPE_PRE_DIGITS_GPT2,
        Some(other) => {
            bail!("tokenizer.ggml.pre {other:?} is not supported (supported: gpt-2, smollm)")
        }
    };
    // Control and user-defined tokens (ggml token types 3 and 4) are matched whole in the
    // text, as the Hugging Face tokenizer does with its added tokens.
    let added = match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => {
            ensure!(
                types.len() == tokens.len(),
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            );
            types
                .iter()
                .enumerate()
                .filter(|(i, t)| {
                    matches!(t, Value::I32(3) | Value::I32(4)) && !tokens[*i].is_empty()
                })
                .map(|(i, _)| i as u32)
                .collect()
        }
        Some(_) => bail!("tokenizer.ggml.token_type is not an array"),
        None => Vec::new(),
    };
    Ok(Tokenizer {
        kind: TokenizerKind::Bpe,
        lowercase: false,
        strip_accents: false,
        max_word_chars: 0,
        tokens,
        merges,
        specials,
        pre,
        added,
    })
}

/// Loads `m` from the file as f32 with its transforms; returns (shape outermost first, values).
pub fn load(g: &Gguf, bytes: &[u8], m: &GgufMapping) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = g
        .tensor(&m.source)
        .ok_or_else(|| anyhow!("tensor {:?} is missing", m.source))?;
    let mut shape = t.shape()?;
    let values = g.tensor_f32(bytes, t)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "tensor {:?} holds a non-finite value at element {i}",
            m.source
        );
    }
    let values = match (m.unpermute_heads, m.transpose) {
        (None, false) => values,
        (Some(h), false) => {
            let &[r, c] = shape.as_slice() else {
                bail!("tensor {:?} is not 2-D", m.source)
            };
            unpermute_rows(&values, r, c, h).with_context(|| format!("tensor {:?}", m.source))?
        }
        (None, true) => {
            let &[r, c] = shape.as_slice() else {
                bail!("tensor {:?} to transpose is not 2-D", m.source)
            };
            shape = vec![c, r];
            let mut out = vec![0f32; values.len()];
            for i in 0..r {
                for j in 0..c {
                    out[j * r + i] = values[i * c + j];
                }
            }
            out
        }
        (Some(_), true) => bail!("tensor {:?}: transposing a permuted matrix", m.source),
    };
    Ok((shape, values))
}

/// Whether `path` looks like a GGUF file (by its magic, or its extension when unreadable).
pub fn is_gguf(path: &std::path::Path) -> bool {
    if path.is_dir() {
        return false;
    }
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
    {
        Ok(()) => &magic == MAGIC,
        Err(_) => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf")),
    }
}
