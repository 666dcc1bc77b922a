//! `topkit generate` on a tiny random Llama-family model with a byte-level vocabulary:
//! the ids it prints are the core decoder's greedy ones, the streamed text is their bytes,
//! seeds fix the samples, the arena is the plan, and bad arguments are errors (exit 2).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use topkit::format::{FileConfig, PackedModel, Pooling, Special, TokenizerKind};
use topkit::kernels::Kernels;
use topkit::sample::argmax;
use topkit::{Arena, Decoder, KvType, ModelConfig, RunConfig};
use topkit_cli::writer::{Tokenizer, write_file};

const MODEL: ModelConfig = LLAMA;
const EOS: u32 = 258;

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the others
/// for U+0100 onwards in byte order.
fn byte_char(b: u8) -> char {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b as u32) {
        return char::from(b);
    }
    let n = (0..b as u32).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A random model whose tokens 0..256 are the single bytes, then `<|im_start|>`,
/// `<|im_end|>`, `<|endoftext|>` (EOS).
fn model_file() -> &'static Path {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = FILE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let tensors = llama_tensors(&MODEL, 17, |name| match name {
            "tok_emb" => (1.0, 0.0),
            n if n.ends_with("norm.w") => (0.1, 1.0),
            n if n.ends_with("ffn.down_t.w") => (0.3, 0.0),
            _ => (0.5, 0.0),
        });
        let mut tok = Tokenizer::none();
        tok.kind = TokenizerKind::Bpe;
        tok.tokens = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        tok.tokens.extend(
            ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
                .iter()
                .map(|s| s.to_string()),
        );
        tok.specials[Special::Eos as usize] = Some(EOS);
        let cfg = FileConfig {
            model: MODEL,
            pooling: Pooling::None,
            normalize: false,
        };
        let path = tmp.path().join("tiny-llama.tkm");
        std::fs::write(&path, write_file(&cfg, &tok, &tensors).unwrap()).unwrap();
        (tmp, path)
    });
    p
}

/// Greedy ids by the core directly, stopping after `max` tokens or at EOS.
fn core_greedy(prompt: &[u32], max: usize, k_attn: Option<usize>) -> Vec<u32> {
    core_greedy_as(prompt, max, k_attn, (Kernels::Reference, KvType::F32))
}

/// [`core_greedy`] with the given kernels and KV cache type.
fn core_greedy_as(
    prompt: &[u32],
    max: usize,
    k_attn: Option<usize>,
    (kernels, kv): (Kernels, KvType),
) -> Vec<u32> {
    let bytes = read(model_file());
    let pm = PackedModel::parse(bytes.as_slice()).unwrap();
    let layers: Vec<_> = (0..2).map(|i| pm.layer_weights(i).unwrap()).collect();
    let dec = Decoder::from_packed(&pm, &layers)
        .unwrap()
        .with_kernels(kernels)
        .with_kv(kv);
    let run = RunConfig {
        k_attn,
        ..RunConfig::dense(prompt.len() + max, 16)
    };
    let mut mem = vec![0u128; dec.plan(&run).unwrap().peak_bytes / 16];
    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
    let mut s = dec.start(&run, &mut arena).unwrap();
    let mut logits = s.feed(prompt).unwrap().to_vec();
    let mut out = Vec::new();
    while out.len() < max {
        let id = argmax(&logits).unwrap();
        out.push(id);
        if id == EOS || out.len() == max {
            break;
        }
        logits = s.feed(&[id]).unwrap().to_vec();
    }
    out
}

fn generate(extra: &[&str]) -> Out {
    topkit_on("generate", model_file(), extra)
}

fn json(extra: &[&str]) -> serde_json::Value {
    let o = generate(&[extra, &["--json"]].concat());
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    o.json()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

const PROMPT: &str = "72,101,108,108,111,44,32";

#[test]
fn greedy_ids_are_the_core_decoders() {
    let prompt = [72, 101, 108, 108, 111, 44, 32];
    for (k, extra) in [(None, vec![]), (Some(3), vec!["--k-attn", "3"])] {
        let mut args = vec!["--prompt-ids", PROMPT, "--max-tokens", "20", "--chunk", "3"];
        args.extend(extra.iter());
        let v = json(&args);
        let got = ids(&v["ids"]);
        assert_eq!(got, core_greedy(&prompt, 20, k), "k_attn {k:?}");
        assert_eq!(ids(&v["prompt_ids"]), prompt);
        assert_eq!(v["peak_bytes"], v["high_water_bytes"]);
        let stop = v["stop"].as_str().unwrap();
        assert_eq!(
            stop,
            if got.last() == Some(&EOS) {
                "eos"
            } else {
                "max_tokens"
            }
        );
    }
    // k at least the context is dense attention: the same tokens.
    let v = json(&[
        "--prompt-ids",
        PROMPT,
        "--max-tokens",
        "20",
        "--k-attn",
        "64",
    ]);
    assert_eq!(ids(&v["ids"]), core_greedy(&prompt, 20, None));
}

/// `--kv` and `--kernels` run the core decoder with that cache and those kernels; the JSON
/// names them and the cache bytes.
#[test]
fn kv_and_kernels_choose_the_decoder() {
    let prompt = [72, 101, 108, 108, 111, 44, 32];
    let mut f32_bytes = 0;
    for (kv, kvt) in [
        ("f32", KvType::F32),
        ("f16", KvType::F16),
        ("int8", KvType::Int8),
    ] {
        for (kn, kernels) in [("reference", Kernels::Reference), ("fast", Kernels::Fast)] {
            let v = json(&[
                "--prompt-ids",
                PROMPT,
                "--max-tokens",
                "12",
                "--chunk",
                "3",
                "--kv",
                kv,
                "--kernels",
                kn,
            ]);
            let want = core_greedy_as(&prompt, 12, None, (kernels, kvt));
            assert_eq!(ids(&v["ids"]), want, "{kv} {kn}");
            assert_eq!(
                (v["kv"].as_str(), v["kernels"].as_str()),
                (Some(kv), Some(kn))
            );
            assert_eq!(v["peak_bytes"], v["high_water_bytes"]);
            let bytes = v["kv_cache_bytes"].as_u64().unwrap();
            match kvt {
                KvType::F32 => f32_bytes = bytes,
                KvType::F16 => assert_eq!(2 * bytes, f32_bytes),
                // Heads of 4 here: 4 values and one 4-byte scale per head row.
                KvType::Int8 => assert_eq!(2 * bytes, f32_bytes),
            }
        }
    }
    let o = generate(&["--prompt-ids", PROMPT, "--kv", "int4"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

#[test]
fn streamed_text_is_the_tokens_bytes() {
    let v = json(&["--prompt-ids", PROMPT, "--max-tokens", "12", "--ignore-eos"]);
    let got = ids(&v["ids"]);
    assert_eq!(got.len(), 12);
    // Byte tokens are their byte; the specials their name.
    let mut bytes = Vec::new();
    for &id in &got {
        match id {
            0..=255 => bytes.push(id as u8),
            256 => bytes.extend_from_slice(b"<|im_start|>"),
            257 => bytes.extend_from_slice(b"<|im_end|>"),
            _ => bytes.extend_from_slice(b"<|endoftext|>"),
        }
    }
    let want = String::from_utf8_lossy(&bytes).into_owned();
    assert_eq!(v["text"].as_str().unwrap(), want);
    let o = generate(&["--prompt-ids", PROMPT, "--max-tokens", "12", "--ignore-eos"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, format!("{want}\n"));
    assert!(o.stderr.contains("tokens/s"), "{}", o.stderr);
    assert!(o.stderr.contains("arena: planned"), "{}", o.stderr);
}

#[test]
fn a_seed_fixes_the_sample() {
    let run = |seed: &str| {
        ids(&json(&[
            "--prompt-ids",
            PROMPT,
            "--max-tokens",
            "24",
            "--ignore-eos",
            "--temperature",
            "1.5",
            "--top-p",
            "0.95",
            "--seed",
            seed,
        ])["ids"])
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
}

/// A temperature whose inverse overflows f32 is greedy, not "the last id every time".
#[test]
fn a_tiny_temperature_is_greedy() {
    let greedy = ids(&json(&["--prompt-ids", PROMPT, "--max-tokens", "8"])["ids"]);
    for t in ["1e-45", "1e-39"] {
        let v = json(&[
            "--prompt-ids",
            PROMPT,
            "--max-tokens",
            "8",
            "--temperature",
            t,
        ]);
        assert_eq!(ids(&v["ids"]), greedy, "--temperature {t}");
    }
}

/// Counts near usize::MAX do not wrap: the context is capped at max_seq as for any large
/// count (generate), or the error says what is too long (eval-lm).
#[test]
fn huge_counts_do_not_wrap() {
    let max = usize::MAX.to_string();
    let v = json(&["--prompt-ids", PROMPT, "--max-tokens", &max, "--ignore-eos"]);
    assert_eq!(v["stop"], "context_full");
    assert_eq!(v["run"]["seq_len"], MODEL.max_seq);
    let tmp = tempfile::tempdir().unwrap();
    let ids_path = tmp.path().join("ids.txt");
    std::fs::write(&ids_path, "1 2 3").unwrap();
    topkit(&[
        "eval-lm",
        s(model_file()),
        "--ids-file",
        s(&ids_path),
        "--generate",
        &max,
    ])
    .assert_error("exceed the model's max_seq");
}

#[test]
fn the_context_bounds_the_generation() {
    let v = json(&[
        "--prompt-ids",
        PROMPT,
        "--max-tokens",
        "50",
        "--seq",
        "10",
        "--ignore-eos",
    ]);
    assert_eq!(v["stop"], "context_full");
    // The context holds 10 tokens: 7 of prompt, 3 generated and fed back, and the 4th is
    // chosen from the last logits without needing a position.
    assert_eq!(ids(&v["ids"]).len(), 4);
}

#[test]
fn bad_arguments_are_errors() {
    for (args, msg) in [
        (vec!["--prompt-ids", "1,2,300"], "vocabulary size"),
        (vec!["--prompt-ids", "1,2,3", "--seq", "2"], "context"),
        (vec!["--prompt-ids", "1,2,3", "--seq", "65"], "max_seq"),
        (vec!["--prompt-ids", "1,2", "--k-attn", "0"], "k-attn"),
        (
            vec!["--prompt-ids", "1,2", "--temperature=-1"],
            "temperature",
        ),
        (vec!["--prompt-ids", "1,2", "--top-p", "0"], "top_p"),
        (vec!["--prompt-ids", "1,2", "--top-p", "NaN"], "top_p"),
        (
            vec!["--prompt-ids", "1,2", "--temperature", "inf"],
            "temperature",
        ),
        (vec![], "prompt"),
    ] {
        generate(&args).assert_error(msg);
    }
    // An encoder is not a language model.
    let tmp = tiny_dir();
    let bert = pack(&tmp.path().join("model"), &tmp.path().join("bert.tkm"), &[]);
    topkit(&["generate", s(&bert), "--prompt-ids", "1,2"])
        .assert_error("not a causal language model");
}

#[test]
fn eval_lm_compares_top_k_with_dense() {
    let tmp = tempfile::tempdir().unwrap();
    let ids_path = tmp.path().join("ids.txt");
    let ids: Vec<String> = (0..40).map(|i| ((i * 37 + 11) % 256).to_string()).collect();
    std::fs::write(&ids_path, ids.join(" ")).unwrap();
    let o = topkit(&[
        "eval-lm",
        s(model_file()),
        "--ids-file",
        s(&ids_path),
        "--k-attn",
        "2,64",
        "--generate",
        "8",
        "--chunk",
        "5",
        "--json",
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    // Dense against itself; k = 64 >= the context (48) is dense up to f32 rounding.
    assert_eq!(f(&rows[0], "kl_mean"), 0.0);
    assert!(f(&rows[2], "kl_max") < 1e-9, "{}", rows[2]);
    assert_eq!(f(&rows[2], "top1_agreement"), 1.0);
    assert_eq!(rows[2]["continuation"], rows[0]["continuation"]);
    // Top-2 over up to 48 keys changes the distributions.
    assert!(f(&rows[1], "kl_mean") > 1e-6, "{}", rows[1]);
    for r in rows {
        assert_eq!(r["peak_bytes"], r["high_water_bytes"]);
    }

    // --kv int8: the f32 baseline, dense over the int8 cache, then top-k over it.
    let o = topkit(&[
        "eval-lm",
        s(model_file()),
        "--ids-file",
        s(&ids_path),
        "--k-attn",
        "64",
        "--generate",
        "4",
        "--kv",
        "int8",
        "--json",
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let kv: Vec<_> = rows.iter().map(|r| r["kv"].as_str().unwrap()).collect();
    assert_eq!(kv, ["f32", "int8", "int8"]);
    assert_eq!(f(&rows[0], "kl_mean"), 0.0);
    // The int8 cache is close to the f32 one, not equal.
    assert!(
        f(&rows[1], "kl_mean") > 0.0 && f(&rows[1], "kl_max") < 1e-2,
        "{}",
        rows[1]
    );
    assert!(rows[1]["peak_bytes"].as_u64() < rows[0]["peak_bytes"].as_u64());
    for r in rows {
        assert_eq!(r["peak_bytes"], r["high_water_bytes"]);
    }
}

/// The packed f32 SmolLM2-135M-Instruct that `cargo xtask models` makes in the cache
/// (`$TOPKIT_SMOLLM2` overrides the path).
fn smollm2() -> PathBuf {
    let p = match std::env::var_os("TOPKIT_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("models/SmolLM2-135M-Instruct-f32.tkm"),
    };
    cached(p, "models")
}

/// Text prompts through the file's BPE tokenizer and the chat template give the reference's
/// ids and greedy tokens (tests/data/smollm2_golden.json, from transformers).
#[test]
fn smollm2_text_and_chat_prompts_match_the_reference() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/smollm2_golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let model = smollm2();
    for (i, chat) in [(0, false), (3, true)] {
        let g = &golden["prompts"][i];
        let text = g["text"].as_str().unwrap();
        // The chat prompt's text is the template around the user message.
        let user = if chat {
            text.split("user\n")
                .nth(1)
                .unwrap()
                .split("<|im_end|>")
                .next()
                .unwrap()
        } else {
            text
        };
        let mut args = vec![
            "generate",
            s(&model),
            "--prompt",
            user,
            "--max-tokens",
            "16",
        ];
        if chat {
            args.push("--chat");
        }
        args.push("--json");
        let o = topkit(&args);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(ids(&v["prompt_ids"]), ids(&g["ids"]), "prompt {i}");
        assert_eq!(ids(&v["ids"]), ids(&g["greedy"]["ids"])[..16], "prompt {i}");
        assert_eq!(v["peak_bytes"], v["high_water_bytes"]);
    }
}
