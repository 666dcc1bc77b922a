//! `topkit pack` on a tiny synthetic BERT directory: every weight read back through the
//! core's zero-copy views equals the safetensors one (f32 exactly, f16 and int8 within their
//! stated bounds), and config, tokenizer and pooling survive the trip.

mod common;

use common::*;
use topkit::format::{PackedModel, Pooling, Special, TokenizerKind};
use topkit::{Activation, Arch, FfnKind, Norm, PosKind};

const MAX_SEQ: usize = 12;

fn check_weights(dtype: &str) {
    let tmp = tiny_dir();
    let out = pack(
        &tmp.path().join("model"),
        &tmp.path().join("m.tkm"),
        &["--dtype", dtype, "--max-seq", "12"],
    );
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    let tensors = tiny_tensors();
    check_bert(&m, LAYERS, dtype, Some(MAX_SEQ), |name| {
        tensors[name].clone()
    });
}

#[test]
fn f32_weights_round_trip_exactly() {
    check_weights("f32");
}

#[test]
fn f16_weights_round_trip_within_half_an_ulp() {
    check_weights("f16");
}

#[test]
fn int8_weights_round_trip_within_half_a_step() {
    check_weights("int8");
}

#[test]
fn config_tokenizer_and_pooling_survive() {
    let tmp = tiny_dir();
    let out = pack(&tmp.path().join("model"), &tmp.path().join("m.tkm"), &[]);
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    let c = m.config();
    assert_eq!(c.arch, Arch::Bert);
    assert_eq!(
        (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads),
        (VOCAB, D, LAYERS, HEADS, HEADS)
    );
    assert_eq!(
        (c.head_dim, c.d_ff, c.max_seq, c.type_vocab_size),
        (D / HEADS, FF, MAX_POS, 2)
    );
    assert_eq!(
        (c.norm, c.act, c.ffn, c.pos),
        (
            Norm::LayerNorm,
            Activation::GeluErf,
            FfnKind::Plain,
            PosKind::Learned
        )
    );
    assert_eq!(c.norm_eps, 1e-12);
    assert!(!c.causal && !c.tie_embeddings);
    assert_eq!(m.file_config().pooling, Pooling::Mean);
    assert!(m.file_config().normalize);

    let t = m.tokenizer();
    assert_eq!(t.kind(), TokenizerKind::WordPiece);
    assert!(t.lowercase() && t.strip_accents());
    assert_eq!(t.max_word_chars(), 100);
    let vocab = vocab();
    assert_eq!(t.vocab().len(), vocab.len());
    for (i, tok) in vocab.iter().enumerate() {
        assert_eq!(t.vocab().token(i as u32), Some(tok.as_str()));
        assert_eq!(t.vocab().find(tok), Some(i as u32), "lookup of {tok:?}");
    }
    assert_eq!(t.vocab().token(vocab.len() as u32), None);
    assert_eq!(t.vocab().find("nope"), None);
    assert_eq!(
        t.vocab().find_concat("##", "b"),
        vocab.iter().position(|x| x == "##b").map(|i| i as u32)
    );
    let sp = |s| t.special(s);
    assert_eq!(
        (sp(Special::Pad), sp(Special::Unk), sp(Special::Cls)),
        (Some(0), Some(2), Some(3))
    );
    assert_eq!(
        (sp(Special::Sep), sp(Special::Mask), sp(Special::Bos)),
        (Some(4), Some(5), None)
    );
    assert_eq!(t.n_merges(), 0);
}

#[test]
fn inspect_reports_the_file() {
    let tmp = tiny_dir();
    let out = pack(
        &tmp.path().join("model"),
        &tmp.path().join("m.tkm"),
        &["--dtype", "int8"],
    );
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();

    let o = topkit(&["inspect", s(&out), "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(j["crc_status"], "ok");
    assert_eq!(j["crc"], format!("{:#010x}", m.header().crc));
    assert_eq!(j["file_bytes"], bytes.as_slice().len());
    assert_eq!(j["tensors"].as_array().unwrap().len(), m.tensor_count());
    assert_eq!(j["config"]["d_model"], D);
    assert_eq!(j["tokenizer"]["tokens"], VOCAB);
    assert_eq!(j["tokenizer"]["specials"]["cls"]["token"], "[CLS]");
    let total: u64 = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    let by = &j["bytes_by_dtype"];
    assert_eq!(
        by["int8"]["bytes"].as_u64().unwrap() + by["f32"]["bytes"].as_u64().unwrap(),
        total
    );
    let q = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "l1.ffn.down_t.w")
        .unwrap();
    assert_eq!(q["dtype"], "int8");
    assert_eq!(q["shape"], serde_json::json!([FF, D]));
    assert_eq!(q["bytes"], FF * D + 4 * FF);

    let o = topkit(&["inspect", s(&out)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for needle in [
        "checksum  CRC-32",
        ": ok",
        "wordpiece: 40 tokens",
        "l0.q.w",
        "pooling Mean",
    ] {
        assert!(
            o.stdout.contains(needle),
            "{needle:?} not in:\n{}",
            o.stdout
        );
    }
    let o = topkit(&["inspect", s(&out), "--no-verify"]);
    assert!(o.stdout.contains("not checked"), "{}", o.stdout);
}

#[test]
fn pack_prints_errors_and_sizes() {
    let tmp = tiny_dir();
    let o = topkit(&[
        "pack",
        s(&tmp.path().join("model")),
        "-o",
        s(&tmp.path().join("m.tkm")),
        "--dtype",
        "int8",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // One line per tensor with its error, the skipped source tensors, and a summary.
    assert!(o.stdout.contains("l1.ffn.up.w"), "{}", o.stdout);
    assert!(o.stdout.contains("pooler.dense.weight"), "{}", o.stdout);
    assert!(o.stdout.contains("embeddings.position_ids"), "{}", o.stdout);
    assert!(o.stdout.contains("largest rel RMS"), "{}", o.stdout);

    let sizes: Vec<u64> = ["f32", "f16", "int8"]
        .iter()
        .map(|d| {
            let p = pack(
                &tmp.path().join("model"),
                &tmp.path().join(format!("{d}.tkm")),
                &["--dtype", d],
            );
            std::fs::metadata(p).unwrap().len()
        })
        .collect();
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "{sizes:?}");
}

#[test]
fn bert_prefixed_and_gamma_beta_checkpoints_pack() {
    // Task checkpoints prefix "bert." and old ones name LayerNorm parameters gamma/beta.
    let tmp = tempfile::tempdir().unwrap();
    let renamed = tiny_tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                format!(
                    "bert.{}",
                    k.replace("LayerNorm.weight", "LayerNorm.gamma")
                        .replace("LayerNorm.bias", "LayerNorm.beta")
                ),
                v,
            )
        })
        .collect();
    write_hf_dir(&tmp.path().join("model"), "bert", &renamed);
    let out = pack(&tmp.path().join("model"), &tmp.path().join("m.tkm"), &[]);
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    let want = &tiny_tensors()["encoder.layer.1.output.LayerNorm.bias"].1;
    let got = m
        .vector(topkit::format::TensorName::layer(1, "ffn_norm.b"))
        .unwrap();
    assert_eq!(got, want.as_slice());
}

/// The format already holds a Llama-family decoder (RoPE, RMSNorm, SwiGLU, GQA, tied
/// embeddings, no biases) with a BPE tokenizer: written with the writer, parsed and viewed.
#[test]
fn llama_style_file_with_bpe_tokenizer() {
    use topkit::format::{FileConfig, TensorName};
    use topkit_cli::writer::{AlignedBytes, Tokenizer, write_file};
    let model = topkit::ModelConfig {
        vocab_size: 6,
        d_model: 8,
        head_dim: 2,
        d_ff: 12,
        max_seq: 32,
        ..LLAMA
    };
    let tensors = llama_tensors(&model, 3, |_| (1.0, 0.0));
    let mut tok = Tokenizer::none();
    tok.kind = TokenizerKind::Bpe;
    tok.tokens = ["<s>", "</s>", "a", "b", "ab", "Ġab"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tok.merges = vec![(2, 3)];
    tok.specials[Special::Bos as usize] = Some(0);
    tok.specials[Special::Eos as usize] = Some(1);
    let cfg = FileConfig {
        model,
        pooling: Pooling::None,
        normalize: false,
    };
    let bytes = AlignedBytes::new(write_file(&cfg, &tok, &tensors).unwrap());
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    assert_eq!(*m.config(), model);
    let tk = m.tokenizer();
    assert_eq!(
        (tk.kind(), tk.n_merges(), tk.merge(0), tk.merge(1)),
        (TokenizerKind::Bpe, 1, Some((2, 3)), None)
    );
    assert_eq!(tk.vocab().find("Ġab"), Some(5));
    assert_eq!(
        (
            tk.special(Special::Bos),
            tk.special(Special::Eos),
            tk.special(Special::Cls)
        ),
        (Some(0), Some(1), None)
    );
    let layers: Vec<_> = (0..2).map(|i| m.layer_weights(i).unwrap()).collect();
    assert!(layers[0].q_bias.is_none() && layers[0].ffn.gate.is_some());
    let final_norm = m.final_norm().unwrap();
    assert!(final_norm.is_some_and(|n| n.bias.is_none()));
    topkit::Model::new(model, &layers, final_norm).unwrap();

    // Untied, the output head becomes required.
    let untied = FileConfig {
        model: topkit::ModelConfig {
            tie_embeddings: false,
            ..model
        },
        ..cfg
    };
    let bytes = AlignedBytes::new(write_file(&untied, &tok, &tensors).unwrap());
    assert_eq!(
        PackedModel::parse(bytes.as_slice()).err(),
        Some(topkit::Error::MissingTensor(TensorName::global(
            "lm_head.w"
        )))
    );
}
