//! Hostile inputs and outputs around the packed-file parser: devices and directories given as
//! inputs, outputs that are inputs, stdout that cannot be written. Each ends in exit 2 with a
//! one-line error, or in a correct result; no existing file is lost.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The tiny BERT packed into `dir/m.tkm`, with a texts file `dir/texts.svg` (named so that
/// `--plot` would accept it as its output).
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    write_hf_dir(&dir.join("model"), "bert", &tiny_tensors());
    let m = pack(&dir.join("model"), &dir.join("m.tkm"), &[]);
    let texts = dir.join("texts.svg");
    std::fs::write(&texts, "hello world\nthe cat\n").unwrap();
    (m, texts)
}

#[test]
fn an_output_that_is_an_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, texts) = setup(tmp.path());
    let model = tmp.path().join("model");
    let st = model.join("model.safetensors");
    let st_before = std::fs::read(&st).unwrap();
    topkit(&["pack", s(&model), "-o", s(&st)]).assert_error("it is the input");
    // The same file by another path.
    let alias = model.join(".").join("config.json");
    topkit(&["pack", s(&model), "-o", s(&alias)]).assert_error("it is the input");
    assert_eq!(std::fs::read(&st).unwrap(), st_before);

    let m_before = std::fs::read(&m).unwrap();
    topkit(&["budget", s(&m), "--seq", "8", "--emit-rust", s(&m)]).assert_error("it is the input");
    topkit(&["eval", s(&m), "--file", s(&texts), "--plot", s(&texts)])
        .assert_error("it is the input");
    assert_eq!(std::fs::read(&m).unwrap(), m_before);
    assert_eq!(
        std::fs::read_to_string(&texts).unwrap(),
        "hello world\nthe cat\n"
    );
    // A device as the output is never replaced.
    #[cfg(unix)]
    topkit(&["pack", s(&model), "-o", "/dev/null"]).assert_error("not a regular file");
}

#[test]
fn outputs_replace_the_old_file_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, texts) = setup(tmp.path());
    let model = tmp.path().join("model");
    let out = tmp.path().join("again.tkm");
    std::fs::write(&out, vec![7u8; 1 << 20]).unwrap();
    pack(&model, &out, &[]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&m).unwrap());
    let rs = tmp.path().join("plan.rs");
    let o = topkit(&["budget", s(&m), "--seq", "8", "--emit-rust", s(&rs)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(std::fs::read_to_string(&rs).unwrap().contains("pub const"));
    let svg = tmp.path().join("plot.svg");
    let o = topkit(&[
        "eval",
        s(&m),
        "--file",
        s(&texts),
        "--k-attn",
        "2",
        "--plot",
        s(&svg),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{plot}");
    assert!(plot.contains("keys kept per query"));
    // No temporary file left in the folder.
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?}");
    }
}

#[cfg(unix)]
#[test]
fn devices_and_directories_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = setup(tmp.path());
    let start = std::time::Instant::now();
    for args in [
        vec!["inspect", "/dev/zero"],
        vec!["budget", "/dev/zero", "--seq", "8"],
        vec!["embed", "/dev/zero", "text"],
        vec!["generate", "/dev/zero", "--prompt-ids", "1"],
    ] {
        topkit(&args).assert_error("not a regular file");
    }
    topkit(&["inspect", s(tmp.path())]).assert_error("a directory");
    topkit(&["embed", s(&m), "--file", "/dev/urandom"]).assert_error("not a regular file");
    topkit(&["pack", "/dev/zero", "-o", s(&tmp.path().join("z.tkm"))]).assert_error("/dev/zero");
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

/// Runs `topkit ARGS` with stdout going to `stdout`.
fn with_stdout(args: &[&str], stdout: Stdio) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_topkit"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_stdout_is_an_error_a_closed_pipe_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = setup(tmp.path());
    let full = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    };
    for args in [
        vec!["inspect", s(&m), "--json"],
        vec!["inspect", s(&m)],
        vec!["embed", s(&m), "hello world"],
        vec!["budget", s(&m), "--seq", "8", "--json"],
    ] {
        let (code, err) = with_stdout(&args, full());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A reader that stops early: the tool ends quietly with its own verdict.
    let mut child = Command::new(env!("CARGO_BIN_EXE_topkit"))
        .args(["inspect", s(&m)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wrong-typed or out-of-range fields of a Hugging Face directory are errors naming the file
/// and the field, never a default or a truncated value.
#[test]
fn wrong_typed_fields_are_named_errors() {
    let edit = |file: &str, from: &str, to: &str, needle: &str| {
        let tmp = tiny_dir();
        let dir = tmp.path().join("model");
        let p = dir.join(file);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|_| "{}".into());
        let new = if from.is_empty() {
            to.to_string()
        } else {
            assert!(text.contains(from), "{file}: {from:?} not in {text}");
            text.replacen(from, to, 1)
        };
        std::fs::write(&p, new).unwrap();
        let out = tmp.path().join("o.tkm");
        topkit(&["pack", s(&dir), "-o", s(&out)]).assert_error(needle);
        assert!(!out.exists());
    };
    edit(
        "config.json",
        r#""layer_norm_eps": 1e-12"#,
        r#""layer_norm_eps": "x""#,
        r#"config.json: "layer_norm_eps" must be a positive number"#,
    );
    edit(
        "config.json",
        r#""layer_norm_eps": 1e-12"#,
        r#""layer_norm_eps": 0"#,
        r#""layer_norm_eps" must be a positive number, found 0"#,
    );
    edit(
        "config.json",
        r#""hidden_act": "gelu""#,
        r#""hidden_act": 3"#,
        r#"config.json: "hidden_act" must be a string"#,
    );
    edit(
        "tokenizer.json",
        "",
        r#"{"model": {"max_input_chars_per_word": 4294967296}}"#,
        r#""max_input_chars_per_word" must be an integer in 0..=4294967295"#,
    );
    edit(
        "tokenizer_config.json",
        "true",
        r#""yes""#,
        r#"tokenizer_config.json: "do_lower_case" must be true or false"#,
    );
    edit(
        "1_Pooling/config.json",
        "true",
        "1",
        r#""pooling_mode_mean_tokens" must be true or false"#,
    );
    edit(
        "sentence_bert_config.json",
        "",
        r#"{"max_seq_length": -1}"#,
        r#"sentence_bert_config.json: "max_seq_length" must be a non-negative integer"#,
    );
    edit(
        "sentence_bert_config.json",
        "",
        r#"{"max_seq_length": 17}"#,
        "max_seq_length 17 must be in 1..=16",
    );
}

/// A sentence-transformers model packs with its own max_seq_length (what sentence-transformers
/// truncates to); --max-seq still overrides it.
#[test]
fn sentence_bert_max_seq_length_is_the_default() {
    let tmp = tiny_dir();
    let dir = tmp.path().join("model");
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 8, "do_lower_case": false}"#,
    )
    .unwrap();
    let max_seq = |extra: &[&str]| {
        let out = tmp.path().join("o.tkm");
        pack(&dir, &out, extra);
        let bytes = read(&out);
        let m = topkit::format::PackedModel::parse(bytes.as_slice()).unwrap();
        m.config().max_seq
    };
    assert_eq!(max_seq(&[]), 8);
    assert_eq!(max_seq(&["--max-seq", "12"]), 12);
    std::fs::remove_file(dir.join("sentence_bert_config.json")).unwrap();
    assert_eq!(max_seq(&[]), MAX_POS);
}

/// A crafted vocabulary cannot send terminal escape codes through `inspect`.
#[test]
fn inspect_escapes_control_characters() {
    let tmp = tiny_dir();
    let dir = tmp.path().join("model");
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    assert!(vocab.contains("[PAD]\n"));
    std::fs::write(
        dir.join("vocab.txt"),
        vocab.replacen("[PAD]\n", "\u{1b}[2J\u{9b}\n", 1),
    )
    .unwrap();
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"pad_token": "\u001b[2J\u009b"}"#,
    )
    .unwrap();
    let m = pack(&dir, &tmp.path().join("m.tkm"), &[]);
    let o = topkit(&["inspect", s(&m)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        o.stdout
    );
    assert!(o.stdout.contains(r"pad=\u{1b}[2J\u{9b}("), "{}", o.stdout);
    for (raw, shown) in [
        ("[CLS]", "[CLS]"),
        ("é<|im_end|>", "é<|im_end|>"),
        ("\u{1b}[2J\u{9b}x\n\u{7f}", r"\u{1b}[2J\u{9b}x\n\u{7f}"),
    ] {
        assert_eq!(topkit_cli::inspect::escape_controls(raw), shown);
    }
}

/// The issue's case: a Llama of d_model 4096, 48 layers, 65536 tokens of context needs a
/// 96 GiB arena; the tool says so (exit 2) instead of aborting in the allocator.
#[test]
fn an_arena_the_machine_cannot_give_is_an_error() {
    let model = topkit::ModelConfig {
        d_model: 4096,
        n_layers: 48,
        n_heads: 32,
        n_kv_heads: 32,
        head_dim: 128,
        d_ff: 11008,
        max_seq: 65536,
        ..LLAMA
    };
    let run = topkit::RunConfig {
        seq_len: 65536,
        chunk: 16,
        k_attn: None,
        k_ff: None,
    };
    let plan = topkit::try_plan(&model, &run).unwrap();
    assert!(plan.peak_bytes > 96 << 30, "{}", plan.peak_bytes);
    let Err(e) = topkit_cli::options::arena_for(&plan, "--seq") else {
        panic!("an arena of {} bytes was allocated", plan.peak_bytes)
    };
    let e = e.to_string();
    assert!(
        e.contains(&format!("needs {} bytes", plan.peak_bytes)),
        "{e}"
    );
    assert!(e.contains("--seq"), "{e}");
}
