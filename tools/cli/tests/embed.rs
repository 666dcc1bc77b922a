//! `topkit embed` and `topkit eval` on the real all-MiniLM-L6-v2 packed by `cargo xtask
//! fetch-model` (these tests fail, not skip, when it is absent), against the golden embeddings
//! of sentence-transformers (tests/data/minilm_golden.json).
//!
//! Bars: f32 dense embed at least 0.9999 cosine to the reference (the CLI uses the std build);
//! top-k with k_attn at least the sequence length at least 0.9999 cosine to dense.

mod common;

use std::path::PathBuf;

use common::*;

const BAR: f64 = 0.9999;

fn minilm() -> String {
    let path = cached(
        cache_dir().join("models/all-MiniLM-L6-v2-f32.tkm"),
        "fetch-model",
    );
    path.to_str().unwrap().to_owned()
}

struct Golden {
    text: String,
    ids: usize,
    embedding: Vec<f64>,
}

fn golden() -> Vec<Golden> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/minilm_golden.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Golden {
            text: c["text"].as_str().unwrap().to_owned(),
            ids: c["ids"].as_array().unwrap().len(),
            embedding: floats(&c["embedding"]),
        })
        .collect()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn embeddings(stdout: &str) -> Vec<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_str(stdout).expect("embed --json prints JSON");
    v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect()
}

#[test]
fn embed_json_matches_reference() {
    let model = minilm();
    let cases = golden();
    // A few short texts and the shortest long one keep the debug build fast.
    let mut picked: Vec<&Golden> = cases.iter().filter(|c| c.ids < 32).take(3).collect();
    picked.extend(cases.iter().filter(|c| c.ids >= 200).min_by_key(|c| c.ids));
    assert_eq!(picked.len(), 4);
    let mut args = vec!["embed", model.as_str(), "--json"];
    args.extend(picked.iter().map(|c| c.text.as_str()));
    let out = topkit(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = embeddings(&out.stdout);
    assert_eq!(got.len(), picked.len());
    for (e, case) in got.iter().zip(&picked) {
        assert_eq!(e.len(), 384);
        let cos = cosine(e, &case.embedding);
        assert!(cos >= BAR, "cosine {cos:.7} < {BAR} for {:?}", case.text);
    }
}

/// Both kernel choices reach the golden bar; an unknown choice is a usage error.
#[test]
fn reference_and_fast_kernels_both_match_reference() {
    let model = minilm();
    let cases = golden();
    let case = cases.iter().find(|c| c.ids >= 16 && c.ids < 64).unwrap();
    for k in ["reference", "fast"] {
        let out = topkit(&["embed", &model, "--json", "--kernels", k, &case.text]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let e = embeddings(&out.stdout).remove(0);
        let cos = cosine(&e, &case.embedding);
        assert!(cos >= BAR, "{k}: cosine {cos:.7} < {BAR}");
    }
    let out = topkit(&["embed", &model, "--kernels", "simd", "x"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn plain_output_has_one_line_per_text() {
    let model = minilm();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("texts.txt");
    std::fs::write(&file, "first text\n\nsecond text\n").unwrap();
    let out = topkit(&[
        "embed",
        &model,
        "--file",
        s(&file),
        "--k-attn",
        "4",
        "third text",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "blank lines are skipped");
    for line in lines {
        let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn long_text_is_truncated_with_a_note() {
    let model = minilm();
    // "word" is one token: 300 of them plus [CLS] and [SEP] is 302 tokens.
    let long = ["word"; 300].join(" ");
    let out = topkit(&["embed", &model, "--json", "short", &long]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(embeddings(&out.stdout).len(), 2);
    assert!(
        out.stderr.contains("text 2 has 302 tokens") && out.stderr.contains("truncated to 256"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("text 1 "), "{}", out.stderr);
}

/// Parses the eval table: (k_attn, k_ff, peak bytes, high-water, min cos, mean cos) per row.
fn table(stdout: &str) -> Vec<(String, String, usize, usize, f64, f64)> {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("min cos") && header.contains("peak"),
        "{stdout}"
    );
    lines
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // Rows: k_attn k_ff peak high-water <human peak: 2 words> min mean.
            (w.len() == 8).then(|| {
                (
                    w[0].to_owned(),
                    w[1].to_owned(),
                    w[2].parse().unwrap(),
                    w[3].parse().unwrap(),
                    w[6].parse().unwrap(),
                    w[7].parse().unwrap(),
                )
            })
        })
        .collect()
}

#[test]
fn eval_table_and_plot() {
    let model = minilm();
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.txt");
    let long = ["the model reads a sentence"; 8].join(" and ");
    std::fs::write(
        &texts,
        format!("A man is eating food.\nThe weather is lovely today.\n{long}\n"),
    )
    .unwrap();
    let svg = dir.path().join("plot.svg");
    let out = topkit(&[
        "eval",
        &model,
        "--file",
        s(&texts),
        "--k-attn",
        "4,256",
        "--k-ff",
        "512",
        "--plot",
        s(&svg),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = table(&out.stdout);
    // (dense, 4, 256) x (off, 512).
    assert_eq!(rows.len(), 6, "{}", out.stdout);
    for (ka, kf, peak, high, min, mean) in &rows {
        assert_eq!(peak, high, "plan vs measured for k_attn {ka} k_ff {kf}");
        assert!(min <= mean && *mean <= 1.0 + 1e-9);
    }
    let row = |ka: &str, kf: &str| rows.iter().find(|r| r.0 == ka && r.1 == kf).unwrap();
    assert_eq!(row("dense", "off").4, 1.0);
    assert!(row("256", "off").4 >= BAR, "{}", out.stdout);
    // Keeping 4 of up to 43 keys or 512 of 1536 hidden units is an approximation.
    assert!(row("4", "off").4 < row("256", "off").4, "{}", out.stdout);
    assert!(row("dense", "512").4 < 1.0, "{}", out.stdout);
    assert!(
        out.stderr.contains("[6/6]"),
        "progress on stderr: {}",
        out.stderr
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("k_ff 512"), "legend names the series");

    let json = topkit(&[
        "eval",
        &model,
        "--file",
        s(&texts),
        "--k-attn",
        "256",
        "--json",
    ]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[1]["min_cosine"].as_f64().unwrap() >= BAR);
}

#[test]
fn errors_exit_2() {
    let model = minilm();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tkm");
    std::fs::write(&bad, b"not a packed model at all, just some bytes").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let missing = dir.path().join("missing.tkm");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["embed", s(&bad), "text"], "bad.tkm"),
        (vec!["embed", s(&missing), "text"], "missing.tkm"),
        (vec!["embed", &model], "no text"),
        (vec!["embed", &model, "--file", s(&empty)], "no text"),
        (vec!["embed", &model, "--k-attn", "0", "x"], "k-attn"),
        (vec!["embed", &model, "--k-ff", "100000", "x"], "k-ff"),
        (vec!["embed", &model, "--k-attn", "many", "x"], "many"),
        (vec!["embed", &model, "--chunk", "0", "x"], "chunk"),
        (vec!["eval", &model, "--file", s(&empty)], "no text"),
        (
            vec!["eval", &model, "--file", s(&empty), "--k-attn", "8,x"],
            "x",
        ),
        (
            vec!["eval", &model, "--file", s(&empty), "--k-ff", "0"],
            "at least 1",
        ),
        (vec!["eval", &model], "--file"),
        (vec!["eval", &model, "--file", s(&missing)], "missing.tkm"),
    ];
    for (args, needle) in cases {
        topkit(&args).assert_error(needle);
    }
}

#[test]
fn help_explains() {
    for cmd in ["embed", "eval"] {
        let out = topkit(&[cmd, "--help"]);
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("--k-attn") && out.stdout.contains("--file"));
    }
}
