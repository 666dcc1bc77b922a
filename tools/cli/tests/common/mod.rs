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
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `topkit` binary built for this test.
pub fn topkit(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_topkit"))
        .args(args)
        .output()
        .expect("run topkit");
    let o = Out {
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

/// Where the real all-MiniLM-L6-v2 lives: `$TOPKIT_CACHE/models/...` or
/// `~/.cache/topkit/models/...`. Panics with instructions when it is not there.
pub fn minilm_dir() -> PathBuf {
    let cache = std::env::var_os("TOPKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/topkit")
        });
    let dir = cache.join("models/all-MiniLM-L6-v2");
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
