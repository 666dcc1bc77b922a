//! Generates the firmware's model at build time: a seeded random BERT-style encoder, packed
//! into a `.tkm` file by the packer's own writer, its plan written by `topkit budget
//! --emit-rust`, and the input token ids.
//!
//! Environment (read at build time):
//! - `TOPKIT_FW_RAM_BUDGET`: arena budget in bytes (or with a K/M suffix); the emitted
//!   constants then hold a compile-time assert, so a plan that exceeds it fails the build.
//! - `TOPKIT_FW_MODEL`: a packed BERT model (`.tkm`, e.g. all-MiniLM-L6-v2 packed with
//!   `topkit pack --dtype int8`) to embed instead of the generated one.
//! - `TOPKIT_FW_SEQ`, `TOPKIT_FW_CHUNK`, `TOPKIT_FW_K_ATTN`: the run (default 32, 8, 8).
//! - feature `f32`: store the generated model's matrices as f32 instead of int8.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use topkit::format::{FileConfig, Pooling};
use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind};
use topkit_cli::quant::quantize_i8;
use topkit_cli::writer::{Tensor, TensorData, Tokenizer, write_file};

/// The model: small enough for a Cortex-M4 board (about 80 KiB of int8 weights).
const MODEL: ModelConfig = ModelConfig {
    arch: Arch::Bert,
    vocab_size: 256,
    d_model: 64,
    n_layers: 2,
    n_heads: 4,
    n_kv_heads: 4,
    head_dim: 16,
    d_ff: 128,
    max_seq: 32,
    type_vocab_size: 2,
    norm: Norm::LayerNorm,
    norm_eps: 1e-12,
    act: Activation::GeluErf,
    ffn: FfnKind::Plain,
    pos: PosKind::Learned,
    rope_theta: 0.0,
    causal: false,
    tie_embeddings: false,
};
/// The default run: 32 tokens, query chunks of 8, top-8 attention, dense feed-forward.
const SEQ: usize = 32;
const CHUNK: usize = 8;
const K_ATTN: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    println!("cargo::rerun-if-env-changed={name}");
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}
const SEED: u64 = 0x746f_706b_6974; // "topkit"

/// SplitMix64: a tiny, well-mixed generator, so the model is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-a, a).
    fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * a
    }

    fn values(&mut self, n: usize, a: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + self.uniform(a)).collect()
    }
}

fn matrix(name: String, rows: usize, cols: usize, rng: &mut Rng, int8: bool) -> Tensor {
    // Xavier-like range keeps activations of order one through the layers.
    let v = rng.values(rows * cols, (3.0 / cols as f32).sqrt(), 0.0);
    let data = if int8 {
        let (q, scales) = quantize_i8(&v, cols);
        TensorData::I8 { q, scales }
    } else {
        TensorData::F32(v)
    };
    Tensor {
        name,
        shape: vec![rows, cols],
        data,
    }
}

fn vector(name: String, n: usize, rng: &mut Rng, a: f32, offset: f32) -> Tensor {
    Tensor {
        name,
        shape: vec![n],
        data: TensorData::F32(rng.values(n, a, offset)),
    }
}

fn tensors(int8: bool) -> Vec<Tensor> {
    let c = &MODEL;
    let (d, f) = (c.d_model, c.d_ff);
    let mut rng = Rng(SEED);
    let mut t = vec![
        matrix("tok_emb".into(), c.vocab_size, d, &mut rng, int8),
        matrix("pos_emb".into(), c.max_seq, d, &mut rng, int8),
        matrix("seg_emb".into(), c.type_vocab_size, d, &mut rng, int8),
        vector("emb_norm.w".into(), d, &mut rng, 0.1, 1.0),
        vector("emb_norm.b".into(), d, &mut rng, 0.1, 0.0),
    ];
    for i in 0..c.n_layers {
        let n = |s: &str| format!("l{i}.{s}");
        for p in ["q", "k", "v", "o"] {
            t.push(matrix(n(&format!("{p}.w")), d, d, &mut rng, int8));
            t.push(vector(n(&format!("{p}.b")), d, &mut rng, 0.1, 0.0));
        }
        t.push(vector(n("attn_norm.w"), d, &mut rng, 0.1, 1.0));
        t.push(vector(n("attn_norm.b"), d, &mut rng, 0.1, 0.0));
        t.push(matrix(n("ffn.up.w"), f, d, &mut rng, int8));
        t.push(vector(n("ffn.up.b"), f, &mut rng, 0.1, 0.0));
        t.push(matrix(n("ffn.down_t.w"), f, d, &mut rng, int8));
        t.push(vector(n("ffn.down.b"), d, &mut rng, 0.1, 0.0));
        t.push(vector(n("ffn_norm.w"), d, &mut rng, 0.1, 1.0));
        t.push(vector(n("ffn_norm.b"), d, &mut rng, 0.1, 0.0));
    }
    t
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TOPKIT_FW_RAM_BUDGET");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let int8 = std::env::var_os("CARGO_FEATURE_F32").is_none();

    println!("cargo::rerun-if-env-changed=TOPKIT_FW_MODEL");
    let model_path = out.join("model.tkm");
    let (name, vocab, dtype) = match std::env::var_os("TOPKIT_FW_MODEL") {
        Some(src) => {
            let src = PathBuf::from(src);
            println!("cargo::rerun-if-changed={}", src.display());
            std::fs::copy(&src, &model_path)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", src.display()));
            let bytes = topkit_cli::read_packed(&model_path).expect("read the model");
            let m = topkit_cli::parse_packed(&model_path, bytes.as_slice(), true)
                .expect("a valid packed model");
            let name = src.file_name().map_or_else(
                || src.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let q0 = m
                .matrix(topkit::format::TensorName::layer(0, "q.w"))
                .expect("block 0 has a query matrix");
            let dtype = match q0.dtype() {
                topkit::kernels::DType::I8 => "int8".to_string(),
                other => format!("{other:?}").to_lowercase(),
            };
            (name, m.config().vocab_size, dtype)
        }
        None => {
            let config = FileConfig {
                model: MODEL,
                pooling: Pooling::Mean,
                normalize: true,
            };
            let file =
                write_file(&config, &Tokenizer::none(), &tensors(int8)).expect("pack the model");
            std::fs::write(&model_path, &file).expect("write model.tkm");
            let dtype = if int8 { "int8" } else { "f32" };
            (
                "seeded-random-bert".to_string(),
                MODEL.vocab_size,
                dtype.to_string(),
            )
        }
    };
    let seq = env_usize("TOPKIT_FW_SEQ", SEQ);

    // `topkit budget --emit-rust`, through the CLI's own entry point: the plan of the
    // reference kernels, which the firmware runs (the `kernels` bins plan the fast ones with
    // `topkit::plan_with`).
    let plan_path = out.join("plan.rs");
    let mut args: Vec<String> = vec!["topkit".into(), "budget".into()];
    args.push(model_path.display().to_string());
    args.extend(["--kernels".into(), "reference".into()]);
    for (flag, v) in [
        ("--seq", seq),
        ("--chunk", env_usize("TOPKIT_FW_CHUNK", CHUNK)),
        ("--k-attn", env_usize("TOPKIT_FW_K_ATTN", K_ATTN)),
    ] {
        args.push(flag.into());
        args.push(v.to_string());
    }
    if let Ok(budget) = std::env::var("TOPKIT_FW_RAM_BUDGET") {
        args.push("--ram".into());
        args.push(budget);
    }
    args.push("--emit-rust".into());
    args.push(plan_path.display().to_string());
    // Exit code 1 ("does not fit") still writes the constants: their compile-time assert is
    // what stops the build, with its message. Only an error (2) stops here.
    let code = topkit_cli::run(&args);
    assert!(code != topkit_cli::EXIT_ERROR, "topkit budget failed");

    write_inputs(&out.join("inputs.rs"), &name, &dtype, seq, vocab);
}

/// The input: token ids drawn from a seeded generator, segment 0, no padding.
fn write_inputs(path: &Path, name: &str, dtype: &str, seq: usize, vocab: usize) {
    let mut rng = Rng(SEED ^ 0x1234_5678);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// The embedded model: its file name, or how it was generated."
    );
    let _ = writeln!(s, "pub const MODEL_NAME: &str = {name:?};");
    let _ = writeln!(s, "/// Storage of the model's matrices.");
    let _ = writeln!(s, "pub const DTYPE: &str = {dtype:?};");
    let _ = writeln!(s, "/// Input token ids (`RUN.seq_len` of them).");
    let _ = write!(s, "pub const TOKENS: [u32; {seq}] = [");
    for _ in 0..seq {
        let _ = write!(s, "{}, ", rng.next() % vocab as u64);
    }
    let _ = writeln!(s, "];");
    std::fs::write(path, s).expect("write inputs.rs");
}
