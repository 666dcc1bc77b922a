//! Shared helpers of the CLI tests: a tiny synthetic Hugging Face BERT directory, running the
//! `topkit` binary, reading packed files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::{Dtype, SafeTensors};
use topkit_cli::writer::AlignedBytes;

/// Output of one run of the binary.
#[derive(Debug)]
pub struct Out {
    /// The arguments it ran with.
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts that the run failed as an error (exit code 2) with `needle` in its message.
    #[track_caller]
    pub fn assert_error(&self, needle: &str) {
        assert_eq!(
            self.code, 2,
            "{:?}: exit code {}: {}{}",
            self.args, self.code, self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "{:?}: {needle:?} not in {}",
            self.args,
            self.stderr
        );
    }

    /// The JSON the run printed.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{:?}: {e}: {}{}", self.args, self.stdout, self.stderr))
    }
}

/// Runs the `topkit` binary built for this test.
pub fn topkit(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_topkit"))
        .args(args)
        .output()
        .expect("run topkit");
    let o = Out {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out
            .status
            .code()
            .expect("exit code (not killed by a signal)"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !o.stderr.contains("panicked"),
        "topkit panicked: {}",
        o.stderr
    );
    o
}

/// Runs `topkit CMD FILE EXTRA...`.
pub fn topkit_on(cmd: &str, file: &Path, extra: &[&str]) -> Out {
    let mut args = vec![cmd, s(file)];
    args.extend_from_slice(extra);
    topkit(&args)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// The tiny BERT and its vocabulary are shared with topkit-tests and fuzz; each test file
// uses a part of them.
#[allow(unused_imports)]
pub use topkit_fixtures::{
    D, FF, HEADS, LAYERS, Lcg, MAX_POS, Tensors, VOCAB, config_json, tiny_tensors, vocab,
};

/// Writes a Hugging Face BERT directory into `dir` from `tensors` (see
/// [`topkit_fixtures::write_hf_dir`]); panics when it cannot.
pub fn write_hf_dir(dir: &Path, model_type: &str, tensors: &Tensors) {
    topkit_fixtures::write_hf_dir(dir, model_type, tensors)
        .unwrap_or_else(|e| panic!("write {}: {e}", dir.display()));
}

/// A tiny BERT directory in a fresh temporary folder.
pub fn tiny_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_hf_dir(&tmp.path().join("model"), "bert", &tiny_tensors());
    tmp
}

/// Packs `src` with the CLI, asserting success; returns the output path.
pub fn pack(src: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["pack", s(src), "-o", s(out)];
    args.extend_from_slice(extra);
    let o = topkit(&args);
    assert_eq!(o.code, 0, "pack failed: {}\n{}", o.stdout, o.stderr);
    out.to_path_buf()
}

/// Reads a packed file into aligned memory.
pub fn read(path: &Path) -> AlignedBytes {
    AlignedBytes::read(path).unwrap()
}

/// f32 values of a safetensors tensor.
pub fn st_f32(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32);
    (
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    )
}

/// The Hugging Face -> topkit name table of a BERT with `layers` blocks, written out
/// independently of the packer (with `true` for the down projection, stored transposed).
pub fn bert_names(layers: usize) -> Vec<(String, String, bool)> {
    let mut v: Vec<(String, String, bool)> = [
        ("embeddings.word_embeddings.weight", "tok_emb"),
        ("embeddings.position_embeddings.weight", "pos_emb"),
        ("embeddings.token_type_embeddings.weight", "seg_emb"),
        ("embeddings.LayerNorm.weight", "emb_norm.w"),
        ("embeddings.LayerNorm.bias", "emb_norm.b"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string(), false))
    .collect();
    for i in 0..layers {
        for (hf, ours) in [
            ("attention.self.query.weight", "q.w"),
            ("attention.self.query.bias", "q.b"),
            ("attention.self.key.weight", "k.w"),
            ("attention.self.key.bias", "k.b"),
            ("attention.self.value.weight", "v.w"),
            ("attention.self.value.bias", "v.b"),
            ("attention.output.dense.weight", "o.w"),
            ("attention.output.dense.bias", "o.b"),
            ("attention.output.LayerNorm.weight", "attn_norm.w"),
            ("attention.output.LayerNorm.bias", "attn_norm.b"),
            ("intermediate.dense.weight", "ffn.up.w"),
            ("intermediate.dense.bias", "ffn.up.b"),
            ("output.dense.weight", "ffn.down_t.w"),
            ("output.dense.bias", "ffn.down.b"),
            ("output.LayerNorm.weight", "ffn_norm.w"),
            ("output.LayerNorm.bias", "ffn_norm.b"),
        ] {
            v.push((
                format!("encoder.layer.{i}.{hf}"),
                format!("l{i}.{ours}"),
                ours == "ffn.down_t.w",
            ));
        }
    }
    v
}

/// `values` (`rows x cols`) transposed.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// A tiny Llama: 2 layers of d_model 16, 4 heads of 4 over 2 KV heads, gated SiLU
/// feed-forward of 32, RMSNorm, RoPE, 259 tokens, 64 positions, tied embeddings.
pub const LLAMA: topkit::ModelConfig = topkit::ModelConfig {
    arch: topkit::Arch::Llama,
    vocab_size: 259,
    d_model: 16,
    n_layers: 2,
    n_heads: 4,
    n_kv_heads: 2,
    head_dim: 4,
    d_ff: 32,
    max_seq: 64,
    type_vocab_size: 0,
    norm: topkit::Norm::RmsNorm,
    norm_eps: 1e-5,
    act: topkit::Activation::Silu,
    ffn: topkit::FfnKind::Gated,
    pos: topkit::PosKind::Rope,
    rope_theta: 10000.0,
    causal: true,
    tie_embeddings: true,
};

/// Random f32 tensors of a tied Llama-style `model` in topkit's names and order: `tok_emb`,
/// `final_norm.w`, then per layer q, k, v, o, attn_norm, ffn.up, ffn.gate, ffn.down_t and
/// ffn_norm. Element values are `offset + scale * x` with `(scale, offset) = dist(name)` and
/// `x` from [`Lcg::new`]`(seed)`, drawn in that order.
pub fn llama_tensors(
    model: &topkit::ModelConfig,
    seed: u64,
    dist: impl Fn(&str) -> (f32, f32),
) -> Vec<topkit_cli::writer::Tensor> {
    let (d, kv, f, v) = (model.d_model, model.kv_dim(), model.d_ff, model.vocab_size);
    let mut rng = Lcg::new(seed);
    let mut t = |name: String, shape: Vec<usize>| {
        let (scale, offset) = dist(&name);
        let n = shape.iter().product();
        let data = (0..n).map(|_| offset + scale * rng.next()).collect();
        topkit_cli::writer::Tensor {
            name,
            shape,
            data: topkit_cli::writer::TensorData::F32(data),
        }
    };
    let mut tensors = vec![
        t("tok_emb".into(), vec![v, d]),
        t("final_norm.w".into(), vec![d]),
    ];
    for i in 0..model.n_layers {
        for (n, shape) in [
            ("q.w", vec![d, d]),
            ("k.w", vec![kv, d]),
            ("v.w", vec![kv, d]),
            ("o.w", vec![d, d]),
            ("attn_norm.w", vec![d]),
            ("ffn.up.w", vec![f, d]),
            ("ffn.gate.w", vec![f, d]),
            ("ffn.down_t.w", vec![f, d]),
            ("ffn_norm.w", vec![d]),
        ] {
            tensors.push(t(format!("l{i}.{n}"), shape));
        }
    }
    tensors
}

/// The cache `cargo xtask fetch-model` fills: `$TOPKIT_CACHE` or `~/.cache/topkit`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TOPKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/topkit")
        })
}

/// `path`, asserting that it is there; else the message says to run `cargo xtask XTASK`, which
/// fetches and packs the model.
#[track_caller]
pub fn cached(path: PathBuf, xtask: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask {xtask}` first (it fetches and packs the model)",
        path.display()
    );
    path
}

/// Where the real all-MiniLM-L6-v2 lives: `$TOPKIT_CACHE/models/...` or
/// `~/.cache/topkit/models/...`. Panics with instructions when it is not there.
pub fn minilm_dir() -> PathBuf {
    let dir = cache_dir().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists() && dir.join("config.json").exists(),
        "the real all-MiniLM-L6-v2 is not in {}: run `cargo xtask fetch-model` first",
        dir.display()
    );
    dir
}

/// Checks packed tensor `name` against the source values `want` (shape `want_shape`):
/// f32 exactly, f16 within half an ulp, int8 within half a quantization step.
pub fn check_tensor(
    m: &topkit::format::PackedModel<'_>,
    name: &str,
    want: &[f32],
    want_shape: &[usize],
    dtype: &str,
) {
    use topkit::kernels::Weights;
    let t = m.find(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(t.shape(), want_shape, "{name}");
    match t.view().unwrap() {
        topkit::format::TensorView::Vector(v) => {
            // Vectors are always f32: exact.
            assert_eq!(v, want, "{name}");
        }
        topkit::format::TensorView::Matrix(mat) => {
            assert_eq!((mat.rows(), mat.cols()), (want_shape[0], want_shape[1]));
            let cols = mat.cols();
            match (dtype, mat.weights()) {
                ("f32", Weights::F32(w)) => assert!(w == want, "{name}: f32 must be exact"),
                ("f16", Weights::F16(w)) => {
                    for (i, (&x, y)) in want.iter().zip(w).enumerate() {
                        // Round to nearest: half an f16 ulp, 2^-11 relative (normal range),
                        // 2^-25 absolute below 2^-14.
                        let bound = (x.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                        assert!((x - y.to_f32()).abs() <= bound, "{name}[{i}]: {x} vs {y}");
                    }
                }
                ("int8", Weights::I8 { q, scales }) => {
                    for (r, row) in want.chunks(cols).enumerate() {
                        let max = row.iter().fold(0f32, |a, &x| a.max(x.abs()));
                        assert_eq!(
                            scales[r],
                            max / 127.0,
                            "{name} row {r}: scale = max|row| / 127"
                        );
                        for (c, &x) in row.iter().enumerate() {
                            let y = f32::from(q[r * cols + c]) * scales[r];
                            // Half a quantization step, plus f32 rounding (1e-6 of the row max).
                            let bound = scales[r] / 2.0 + 1e-6 * max;
                            assert!(
                                (x - y).abs() <= bound,
                                "{name}[{r},{c}]: {x} vs {y}, bound {bound}"
                            );
                        }
                    }
                }
                (d, w) => panic!("{name}: asked for {d}, stored {w:?}"),
            }
        }
    }
}

/// Checks every tensor of the packed BERT `m` (`layers` blocks, stored as `dtype`) against its
/// Hugging Face source, `source(name)` = (shape, values): the down projections transposed,
/// the position table cut to `max_seq` rows when given, nothing else packed; and that the
/// engine accepts the views as they are.
pub fn check_bert(
    m: &topkit::format::PackedModel<'_>,
    layers: usize,
    dtype: &str,
    max_seq: Option<usize>,
    source: impl Fn(&str) -> (Vec<usize>, Vec<f32>),
) {
    let names = bert_names(layers);
    assert_eq!(
        m.tensor_count(),
        names.len(),
        "exactly the mapped tensors, no pooler"
    );
    for (hf, ours, transposed) in names {
        let (shape, mut want) = source(&hf);
        let mut want_shape = shape.clone();
        if transposed {
            want = transpose(&want, shape[0], shape[1]);
            want_shape = vec![shape[1], shape[0]];
        }
        if let (Some(n), "pos_emb") = (max_seq, ours.as_str()) {
            want.truncate(n * shape[1]);
            want_shape[0] = n;
        }
        check_tensor(m, &ours, &want, &want_shape, dtype);
    }
    let layers: Vec<_> = (0..layers).map(|i| m.layer_weights(i).unwrap()).collect();
    topkit::Model::new(*m.config(), &layers, m.final_norm().unwrap()).unwrap();
}
