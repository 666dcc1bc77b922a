//! Shared helpers of the CLI tests: a tiny synthetic Hugging Face BERT directory, running the
//! `topkit` binary, reading packed files.
#![allow(dead_code)]

use std::collections::BTreeMap;
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

/// Deterministic values in [-1, 1) (a 64-bit LCG), so the fixtures are the same every run.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Shape of the tiny BERT.
pub const VOCAB: usize = 40;
pub const D: usize = 8;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 2;
pub const FF: usize = 16;
pub const MAX_POS: usize = 16;

/// The tiny BERT's vocabulary: BERT's specials at their usual relative places, words and
/// `##` pieces, one multi-byte token.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = [
        "[PAD]",
        "[unused0]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "é",
        "the",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let mut i = 0;
    while v.len() < VOCAB {
        let c = (b'a' + (i % 26) as u8) as char;
        v.push(if i < 26 {
            c.to_string()
        } else {
            format!("##{c}")
        });
        i += 1;
    }
    v
}

/// Source tensors of the tiny BERT, by Hugging Face name (f32 values, shape).
pub fn tiny_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = Lcg::new(7);
    let mut t = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.next() * scale).collect();
        t.insert(name, (shape, v));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB, D],
        1.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POS, D],
        0.5,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, D],
        0.5,
    );
    add("embeddings.LayerNorm.weight".into(), vec![D], 1.0);
    add("embeddings.LayerNorm.bias".into(), vec![D], 0.1);
    for i in 0..LAYERS {
        let l = format!("encoder.layer.{i}");
        for (m, rows, cols) in [
            ("attention.self.query", D, D),
            ("attention.self.key", D, D),
            ("attention.self.value", D, D),
            ("attention.output.dense", D, D),
            ("intermediate.dense", FF, D),
            ("output.dense", D, FF),
        ] {
            // Wide dynamic range within rows, so int8 errors are not trivially small.
            add(format!("{l}.{m}.weight"), vec![rows, cols], 3.0);
            add(format!("{l}.{m}.bias"), vec![rows], 0.1);
        }
        for m in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{l}.{m}.weight"), vec![D], 1.0);
            add(format!("{l}.{m}.bias"), vec![D], 0.1);
        }
    }
    add("pooler.dense.weight".into(), vec![D, D], 1.0);
    add("pooler.dense.bias".into(), vec![D], 1.0);
    t
}

pub fn config_json(model_type: &str) -> String {
    format!(
        r#"{{
  "architectures": ["BertModel"],
  "model_type": "{model_type}",
  "hidden_act": "gelu",
  "hidden_size": {D},
  "intermediate_size": {FF},
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": {MAX_POS},
  "num_attention_heads": {HEADS},
  "num_hidden_layers": {LAYERS},
  "position_embedding_type": "absolute",
  "type_vocab_size": 2,
  "vocab_size": {VOCAB}
}}"#
    )
}

/// Writes a Hugging Face BERT directory into `dir` from `tensors` (plus an I64
/// `embeddings.position_ids`, as real checkpoints have).
pub fn write_hf_dir(
    dir: &Path,
    model_type: &str,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json(model_type)).unwrap();
    std::fs::write(dir.join("vocab.txt"), vocab().join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    let bytes: BTreeMap<String, (Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (shape, v))| {
            (
                k.clone(),
                (
                    shape.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            )
        })
        .collect();
    let ids: Vec<u8> = (0..MAX_POS as i64).flat_map(|i| i.to_le_bytes()).collect();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, (shape, b))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    views.push((
        "embeddings.position_ids".into(),
        safetensors::tensor::TensorView::new(Dtype::I64, vec![1, MAX_POS], &ids).unwrap(),
    ));
    let st = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
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
