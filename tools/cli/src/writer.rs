//! Writes packed model files (`.tkm`) with the layout of [`topkit::format`]: the core's
//! `encode` functions produce every fixed-size record, this module only places the sections.

use anyhow::{Result, bail, ensure};
use half::f16;
use topkit::format::{
    self, ALIGN, CONFIG_BYTES, CRC_OFFSET, FileConfig, HEADER_BYTES, Header, MAX_NAME_BYTES,
    MAX_RANK, NO_TOKEN, SPECIALS, Section, TENSOR_ENTRY_BYTES, TensorEntry, TokenizerHeader,
    TokenizerKind,
};
use topkit::kernels::DType;

/// Values of one tensor, in the dtype it is stored with.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// f32 values.
    F32(Vec<f32>),
    /// f16 values.
    F16(Vec<f16>),
    /// int8 values and one f32 scale per row.
    I8 {
        /// Quantized values.
        q: Vec<i8>,
        /// One scale per row.
        scales: Vec<f32>,
    },
    /// ggml blocks, row-major, exactly as ggml lays them out.
    Blocks {
        /// The block type.
        ty: topkit::kernels::BlockType,
        /// The blocks' bytes.
        data: Vec<u8>,
    },
}

impl TensorData {
    /// The dtype.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I8 { .. } => DType::I8,
            TensorData::Blocks { ty, .. } => DType::Block(*ty),
        }
    }

    fn data_bytes(&self) -> &[u8] {
        match self {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::F16(v) => bytemuck::cast_slice(v),
            TensorData::I8 { q, .. } => bytemuck::cast_slice(q),
            TensorData::Blocks { data, .. } => data,
        }
    }

    fn scale_bytes(&self) -> &[u8] {
        match self {
            TensorData::I8 { scales, .. } => bytemuck::cast_slice(scales),
            _ => &[],
        }
    }

    /// Bytes this tensor takes in the file (data and scales, without padding).
    pub fn bytes(&self) -> usize {
        self.data_bytes().len() + self.scale_bytes().len()
    }
}

/// A named tensor to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Full name (see [`topkit::format`] for the scheme).
    pub name: String,
    /// Dimensions, outermost first (1 to 4 of them).
    pub shape: Vec<usize>,
    /// The values.
    pub data: TensorData,
}

/// The tokenizer to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenizer {
    /// Algorithm.
    pub kind: TokenizerKind,
    /// Lower-case text first.
    pub lowercase: bool,
    /// Strip accents first.
    pub strip_accents: bool,
    /// Longest word WordPiece splits, characters.
    pub max_word_chars: u32,
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// BPE merges as (left id, right id), in rank order.
    pub merges: Vec<(u32, u32)>,
    /// Special token ids by [`topkit::format::Special`] slot.
    pub specials: [Option<u32>; SPECIALS],
    /// BPE pre-tokenizer code ([`topkit::format::BPE_PRE_GPT2`], ...; 0 unless BPE).
    pub pre: u32,
    /// Added tokens BPE matches whole in the text (empty unless BPE).
    pub added: Vec<u32>,
}

impl Tokenizer {
    /// No tokenizer.
    pub fn none() -> Self {
        Tokenizer {
            kind: TokenizerKind::None,
            lowercase: false,
            strip_accents: false,
            max_word_chars: 0,
            tokens: Vec::new(),
            merges: Vec::new(),
            specials: [None; SPECIALS],
            pre: 0,
            added: Vec::new(),
        }
    }

    /// The tokenizer section's bytes.
    ///
    /// # Errors
    /// When a token is in the vocabulary twice, a special token id is out of the vocabulary, two
    /// BPE merges are the same pair, or a count does not fit 32 bits.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let n = self.tokens.len();
        let n32 = u32::try_from(n)?;
        let mut strings = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        for t in &self.tokens {
            strings.extend_from_slice(t.as_bytes());
            offsets.push(u32::try_from(strings.len())?);
        }
        let mut sorted: Vec<u32> = (0..n32).collect();
        sorted.sort_by(|&a, &b| {
            self.tokens[a as usize]
                .as_bytes()
                .cmp(self.tokens[b as usize].as_bytes())
        });
        if let Some(w) = sorted
            .windows(2)
            .find(|w| self.tokens[w[0] as usize] == self.tokens[w[1] as usize])
        {
            bail!(
                "the vocabulary holds the token {:?} twice (ids {} and {})",
                self.tokens[w[0] as usize],
                w[0],
                w[1]
            );
        }
        let mut specials = [NO_TOKEN; SPECIALS];
        for (slot, id) in specials.iter_mut().zip(self.specials) {
            if let Some(id) = id {
                ensure!(
                    (id as usize) < n,
                    "special token id {id} is not in the vocabulary of {n} tokens"
                );
                *slot = id;
            }
        }
        let header = TokenizerHeader {
            kind: self.kind,
            lowercase: self.lowercase,
            strip_accents: self.strip_accents,
            n_tokens: n32,
            n_merges: u32::try_from(self.merges.len())?,
            string_bytes: u32::try_from(strings.len())?,
            max_word_chars: self.max_word_chars,
            specials,
            pre: self.pre,
            n_added: u32::try_from(self.added.len())?,
        };
        let mut out = header.encode().to_vec();
        for v in offsets.iter().chain(&sorted) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (a, b) in &self.merges {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        let mut index: Vec<u32> = (0..u32::try_from(self.merges.len())?).collect();
        index.sort_by_key(|&r| self.merges[r as usize]);
        if let Some(w) = index
            .windows(2)
            .find(|w| self.merges[w[0] as usize] == self.merges[w[1] as usize])
        {
            bail!(
                "BPE merges {} and {} are the same pair {:?}",
                w[0],
                w[1],
                self.merges[w[0] as usize]
            );
        }
        for r in index.iter().chain(&self.added) {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&strings);
        ensure!(
            Some(out.len()) == header.section_bytes(),
            "tokenizer section size"
        );
        Ok(out)
    }
}

fn pad_to_align(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
}

/// Builds a whole file: header, config, tokenizer, tensor table (sorted by name), names and
/// data, each section and tensor 16-byte aligned, then the CRC.
///
/// # Errors
/// When two tensors share a name, a name is empty or too long, a rank is out of range, the
/// tokenizer cannot be encoded ([`Tokenizer::encode`]) or a size does not fit 32 bits.
pub fn write_file(
    config: &FileConfig,
    tokenizer: &Tokenizer,
    tensors: &[Tensor],
) -> Result<Vec<u8>> {
    let mut order: Vec<&Tensor> = tensors.iter().collect();
    order.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if let Some(w) = order.windows(2).find(|w| w[0].name == w[1].name) {
        bail!("two tensors are named {}", w[0].name);
    }
    for t in &order {
        ensure!(
            !t.name.is_empty() && t.name.len() <= MAX_NAME_BYTES,
            "tensor name {:?} must be 1 to {MAX_NAME_BYTES} bytes",
            t.name
        );
        ensure!(
            (1..=MAX_RANK).contains(&t.shape.len()),
            "tensor {} has rank {}",
            t.name,
            t.shape.len()
        );
    }

    let mut out = vec![0u8; HEADER_BYTES];
    let config_at = out.len();
    out.extend_from_slice(&config.encode());
    debug_assert_eq!(out.len() - config_at, CONFIG_BYTES);
    pad_to_align(&mut out);

    let tok_at = out.len();
    out.extend_from_slice(&tokenizer.encode()?);
    let tok_len = out.len() - tok_at;
    pad_to_align(&mut out);

    // The table's entries need the data offsets, so it is filled in after the data is placed.
    let table_at = out.len();
    out.resize(table_at + order.len() * TENSOR_ENTRY_BYTES, 0);
    pad_to_align(&mut out);

    let names_at = out.len();
    let mut name_spans = Vec::with_capacity(order.len());
    for t in &order {
        name_spans.push(((out.len() - names_at) as u32, t.name.len() as u32));
        out.extend_from_slice(t.name.as_bytes());
    }
    let names_len = out.len() - names_at;
    pad_to_align(&mut out);

    let data_at = out.len();
    let mut entries = Vec::with_capacity(order.len());
    for (t, (name_offset, name_len)) in order.iter().zip(name_spans) {
        let data_offset = out.len() as u64;
        out.extend_from_slice(t.data.data_bytes());
        let data_len = out.len() as u64 - data_offset;
        pad_to_align(&mut out);
        let (scales_offset, scales_len) = match t.data.scale_bytes() {
            [] => (0, 0),
            s => {
                let at = out.len() as u64;
                out.extend_from_slice(s);
                pad_to_align(&mut out);
                (at, s.len() as u64)
            }
        };
        let mut shape = [0u32; MAX_RANK];
        for (d, &s) in shape.iter_mut().zip(&t.shape) {
            *d = u32::try_from(s)?;
        }
        entries.push(TensorEntry {
            name_offset,
            name_len,
            dtype: format::dtype_code(t.data.dtype()),
            rank: t.shape.len() as u32,
            shape,
            data_offset,
            data_len,
            scales_offset,
            scales_len,
            group: if t.data.dtype().block().is_some() {
                topkit::kernels::BLOCK as u32
            } else {
                0
            },
        });
    }
    for (i, e) in entries.iter().enumerate() {
        let at = table_at + i * TENSOR_ENTRY_BYTES;
        out[at..at + TENSOR_ENTRY_BYTES].copy_from_slice(&e.encode());
    }

    let header = Header {
        file_bytes: out.len() as u64,
        crc: 0,
        config: Section {
            offset: config_at as u64,
            len: CONFIG_BYTES as u64,
        },
        tokenizer: Section {
            offset: tok_at as u64,
            len: tok_len as u64,
        },
        tensors: Section {
            offset: table_at as u64,
            len: order.len() as u64,
        },
        names: Section {
            offset: names_at as u64,
            len: names_len as u64,
        },
        data: Section {
            offset: data_at as u64,
            len: (out.len() - data_at) as u64,
        },
    };
    out[..HEADER_BYTES].copy_from_slice(&header.encode());
    reseal(&mut out);
    Ok(out)
}

/// Recomputes and stores the CRC-32 of a whole file (after editing its bytes).
pub fn reseal(file: &mut [u8]) {
    let crc = format::file_crc(file);
    file[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A copy of some bytes that starts on a 16-byte boundary, as [`topkit::format::PackedModel`]
/// needs (a `Vec<u8>` guarantees no alignment).
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    /// Takes `bytes`, moving them only when they are not aligned already.
    pub fn new(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        if bytes.as_ptr().align_offset(ALIGN) == 0 {
            return AlignedBytes {
                buf: bytes,
                start: 0,
                len,
            };
        }
        let mut buf = vec![0u8; len + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        buf[start..start + len].copy_from_slice(&bytes);
        AlignedBytes { buf, start, len }
    }

    /// Reads a file into aligned memory (a regular file only, see [`crate::files`]).
    ///
    /// # Errors
    /// When `path` cannot be read or is not a regular file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self::new(crate::files::read_model(path)?))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}
