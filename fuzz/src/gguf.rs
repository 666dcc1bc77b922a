//! A tiny Llama GGUF made in code (the seed of `gguf_import`, and through the importer the
//! tiny byte-level BPE of `bpe`), and the in-memory `topkit pack` path of a GGUF file.

use topkit::tokenizer::byte_char;
use topkit_cli::import::gguf::{self, Gguf};
use topkit_cli::quant::StoreDType;
use topkit_cli::writer::AlignedBytes;

/// GGUF bytes, written field by field (little-endian, version 3).
#[derive(Default)]
pub struct GgufBuilder {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
    n_tensors: u64,
}

/// Data alignment of the written file (GGUF's default).
const ALIGN: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl GgufBuilder {
    fn key(&mut self, k: &str, ty: u32) -> &mut Vec<u8> {
        self.n_kv += 1;
        put_str(&mut self.kv, k);
        self.kv.extend_from_slice(&ty.to_le_bytes());
        &mut self.kv
    }

    /// A u32 value (type 4).
    pub fn u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.key(k, 4).extend_from_slice(&v.to_le_bytes());
        self
    }

    /// An f32 value (type 6).
    pub fn f32(&mut self, k: &str, v: f32) -> &mut Self {
        self.key(k, 6).extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A string (type 8).
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        put_str(self.key(k, 8), v);
        self
    }

    /// The header of an array (type 9) of `len` elements of type `elem`; the caller appends
    /// the elements to the returned bytes.
    fn array(&mut self, k: &str, elem: u32, len: usize) -> &mut Vec<u8> {
        let out = self.key(k, 9);
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&(len as u64).to_le_bytes());
        out
    }

    /// An array (type 9) of strings (element type 8).
    pub fn strs(&mut self, k: &str, v: &[String]) -> &mut Self {
        let out = self.array(k, 8, v.len());
        for s in v {
            put_str(out, s);
        }
        self
    }

    /// An array (type 9) of i32 (element type 5).
    pub fn i32s(&mut self, k: &str, v: &[i32]) -> &mut Self {
        let out = self.array(k, 5, v.len());
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        self
    }

    /// A tensor: ggml dims (innermost first), ggml type code, raw data.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: &[u8]) -> &mut Self {
        self.n_tensors += 1;
        put_str(&mut self.infos, name);
        self.infos
            .extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&ty.to_le_bytes());
        self.infos
            .extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        self.data.extend_from_slice(data);
        self.data.resize(self.data.len().next_multiple_of(ALIGN), 0);
        self
    }

    /// The file.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().next_multiple_of(ALIGN), 0);
        out.extend_from_slice(&self.data);
        out
    }
}

/// Hidden width of the tiny Llama.
pub const D: usize = 32;
/// Query heads (of 16).
pub const HEADS: usize = 2;
/// Feed-forward width.
pub const FF: usize = 64;

/// The tiny byte-level BPE vocabulary: three added tokens, one token per byte (GPT-2's byte
/// characters), then the merged tokens of [`merges`].
pub fn tokens() -> Vec<String> {
    let mut t: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    t.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    for m in merges() {
        let (a, b) = m.split_once(' ').unwrap_or((&m, ""));
        t.push(format!("{a}{b}"));
    }
    t
}

/// The tiny BPE's merges in rank order (including a two-byte character, é = Ã©).
pub fn merges() -> Vec<String> {
    [
        "Ġ t", "t h", "th e", "Ġt h", "Ġth e", "Ġ a", "i n", "e r", "Ã ©", "Ġ Ã©", "1 2", "Ċ Ċ",
    ]
    .map(String::from)
    .to_vec()
}

/// Deterministic bytes (an LCG).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// Finite f16 values of magnitude below 1 (the importer refuses NaN and infinity).
fn f16_bytes(n: usize, seed: u64) -> Vec<u8> {
    noise(2 * n, seed)
        .chunks_exact(2)
        .flat_map(|c| {
            let bits = 0x2000 + (u16::from_le_bytes([c[0], c[1]]) % 0x1800);
            (bits | (u16::from(c[0] & 1) << 15)).to_le_bytes()
        })
        .collect()
}

/// `n` elements (a multiple of 32) of a block type: each block starts with an f16 scale
/// (and an f16 minimum for Q4_1), then random quants.
fn blocks(ty: u32, n: usize, seed: u64) -> Vec<u8> {
    let (head, quants) = match ty {
        2 => (2, 16), // Q4_0
        3 => (4, 16), // Q4_1
        _ => (2, 32), // Q8_0
    };
    let q = noise(n / 32 * quants, seed);
    q.chunks_exact(quants)
        .flat_map(|qs| {
            let mut b = vec![0x00, 0x20, 0x00, 0xA0][..head].to_vec(); // d = 2^-7, m = -2^-7
            b.extend_from_slice(qs);
            b
        })
        .collect()
}

/// A tiny Llama (1 block, d 32, 2 heads of 16, 1 KV head, d_ff 64, the vocabulary of
/// [`tokens`]) in every tensor type the importer reads: F16 embeddings, Q8_0, Q4_0 and Q4_1
/// matrices, F32 and BF16 norms, an untied LM head when `untied`.
pub fn tiny_llama(untied: bool) -> Vec<u8> {
    let tokens = tokens();
    let v = tokens.len();
    let types: Vec<i32> = (0..v).map(|i| if i < 3 { 3 } else { 1 }).collect();
    let mut g = GgufBuilder::default();
    g.str("general.architecture", "llama")
        .u32("general.alignment", ALIGN as u32)
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", D as u32)
        .u32("llama.feed_forward_length", FF as u32)
        .u32("llama.attention.head_count", HEADS as u32)
        .u32("llama.attention.head_count_kv", 1)
        .u32("llama.rope.dimension_count", (D / HEADS) as u32)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .u32("llama.vocab_size", v as u32)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .strs("tokenizer.ggml.tokens", &tokens)
        .i32s("tokenizer.ggml.token_type", &types)
        .strs("tokenizer.ggml.merges", &merges())
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2);
    let kv = (D / HEADS) as u64;
    g.tensor(
        "token_embd.weight",
        &[D as u64, v as u64],
        1,
        &f16_bytes(v * D, 1),
    );
    let norm: Vec<u8> = (0..D)
        .flat_map(|j| (1.0 + j as f32 / 64.0).to_le_bytes())
        .collect();
    let bf16_norm: Vec<u8> = norm.chunks_exact(4).flat_map(|c| [c[2], c[3]]).collect();
    g.tensor("blk.0.attn_norm.weight", &[D as u64], 0, &norm)
        .tensor("blk.0.ffn_norm.weight", &[D as u64], 30, &bf16_norm)
        .tensor("output_norm.weight", &[D as u64], 0, &norm);
    for (name, cols, rows, ty) in [
        ("attn_q", D as u64, D as u64, 8),
        ("attn_k", D as u64, kv, 8),
        ("attn_v", D as u64, kv, 2),
        ("attn_output", D as u64, D as u64, 3),
        ("ffn_gate", D as u64, FF as u64, 2),
        ("ffn_up", D as u64, FF as u64, 3),
        ("ffn_down", FF as u64, D as u64, 8),
    ] {
        let data = blocks(ty, (cols * rows) as usize, rows + cols);
        g.tensor(&format!("blk.0.{name}.weight"), &[cols, rows], ty, &data);
    }
    if untied {
        g.tensor(
            "output.weight",
            &[D as u64, v as u64],
            8,
            &blocks(8, v * D, 9),
        );
    }
    g.finish()
}

/// Largest number of values the in-memory import converts (keeps executions fast).
pub const MAX_VALUES: u64 = 1 << 20;

/// What `topkit pack model.gguf` does, in memory: parse, map, load and convert every tensor
/// (matrices as `dtype`), write the file and parse it back with the CRC (the packer's
/// self-check). Returns the packed file.
pub fn import(bytes: &[u8], dtype: StoreDType) -> anyhow::Result<AlignedBytes> {
    let g = Gguf::parse(bytes)?;
    let source = gguf::source(&g, None)?;
    let mut total = 0u64;
    let mut tensors = Vec::with_capacity(source.mappings.len());
    for m in &source.mappings {
        let n = g
            .tensor(&m.source)
            .and_then(gguf::TensorInfo::elements)
            .unwrap_or(0);
        total = total.saturating_add(n);
        anyhow::ensure!(total <= MAX_VALUES, "too large for the fuzz target");
        let (shape, values) = gguf::load(&g, bytes, m)?;
        tensors.push(crate::convert(&m.name, shape, values, dtype)?);
    }
    crate::write_checked(&source.config, &source.tokenizer, &tensors)
}
