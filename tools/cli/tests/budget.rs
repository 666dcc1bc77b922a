//! `topkit budget`: the table is the core's plan, the verdict and exit code follow the
//! budgets, and `--emit-rust` writes constants that compile (the golden copy in
//! `tests/data/emitted_plan.rs` is compiled into this test and compared with a fresh emit;
//! regenerate it with `TOPKIT_BLESS=1`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use topkit::format::PackedModel;
use topkit::kernels::Kernels;
use topkit::{KvType, RunConfig, try_plan, try_plan_kv, try_plan_with};

mod emitted {
    include!("data/emitted_plan.rs");
}

/// The tiny BERT, packed as int8 once for all tests of this file.
fn packed() -> &'static Path {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = FILE.get_or_init(|| {
        let tmp = tiny_dir();
        let out = pack(
            &tmp.path().join("model"),
            &tmp.path().join("tiny-int8.tkm"),
            &["--dtype", "int8"],
        );
        (tmp, out)
    });
    p
}

fn model() -> topkit::ModelConfig {
    let b = read(packed());
    *PackedModel::parse(b.as_slice()).unwrap().config()
}

/// A run several tests plan: 8 tokens in chunks of 4, top-3 attention.
const RUN_8_4_3: [&str; 6] = ["--seq", "8", "--chunk", "4", "--k-attn", "3"];

fn budget(extra: &[&str]) -> Out {
    topkit_on("budget", packed(), extra)
}

fn json(extra: &[&str]) -> serde_json::Value {
    budget(&[extra, &["--json"]].concat()).json()
}

/// `--kv` plans the keys and values in that type (the core's `plan_kv`), names it in the
/// JSON and the text, and `--emit-rust` writes `plan_kv` for it (`plan_with` for f32, so the
/// golden file above is unchanged).
#[test]
fn kv_chooses_the_key_storage() {
    let run = RunConfig {
        seq_len: 8,
        chunk: 4,
        k_attn: Some(3),
        k_ff: None,
    };
    let mut f32_cache = 0;
    for (name, kv) in [
        ("f32", KvType::F32),
        ("f16", KvType::F16),
        ("int8", KvType::Int8),
    ] {
        let v = json(&[&RUN_8_4_3[..], &["--kv", name]].concat());
        let plan = try_plan_kv(&model(), &run, Kernels::Fast, kv).unwrap();
        assert_eq!(v["kv"], name);
        assert_eq!(v["peak_bytes"].as_u64(), Some(plan.peak_bytes as u64));
        let cache = v["kv_cache_bytes"].as_u64().unwrap();
        assert_eq!(cache, (plan.keys_bytes + plan.values_bytes) as u64);
        if kv == KvType::F32 {
            f32_cache = cache;
        } else {
            assert!(cache < f32_cache, "{name}: {cache} vs {f32_cache}");
        }
        let text = budget(&[&RUN_8_4_3[..], &["--kv", name]].concat());
        assert!(
            text.stdout.contains(&format!("{name} keys and values")),
            "{}",
            text.stdout
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("plan.rs");
    let o = budget(&[&RUN_8_4_3[..], &["--kv", "int8", "--emit-rust", s(&out)]].concat());
    assert_eq!(o.code, 0, "{}", o.stderr);
    let src = std::fs::read_to_string(&out).unwrap();
    assert!(
        src.contains("topkit::plan_kv(&MODEL, &RUN, KERNELS, topkit::KvType::Int8)"),
        "{src}"
    );
}

/// Without `--kernels` an encoder is planned for the fast kernels (what `topkit embed` runs
/// it with); `--kernels reference` gives the reference plan, which has no byte of the fast
/// kernels' buffers.
#[test]
fn kernels_choose_the_plan() {
    let run = RunConfig {
        seq_len: 8,
        chunk: 4,
        k_attn: Some(3),
        k_ff: None,
    };
    let seq = ["--seq", "8", "--chunk", "4", "--k-attn", "3"];
    for (extra, kernels) in [
        (&[][..], Kernels::Fast),
        (&["--kernels", "fast"][..], Kernels::Fast),
        (&["--kernels", "reference"][..], Kernels::Reference),
    ] {
        let plan = try_plan_with(&model(), &run, kernels).unwrap();
        let j = json(&[&seq[..], extra].concat());
        assert_eq!(j["peak_bytes"], plan.peak_bytes, "{extra:?}");
        let name = if kernels == Kernels::Fast {
            "fast"
        } else {
            "reference"
        };
        assert_eq!(j["kernels"], name);
        let fast: u64 = j["buffers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["name"].as_str().unwrap().ends_with("_fast"))
            .map(|b| b["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(fast > 0, kernels == Kernels::Fast, "{extra:?}");
        let o = budget(&[&seq[..], extra].concat());
        assert!(
            o.stdout.contains(&format!("kernels {name}")),
            "{}",
            o.stdout
        );
    }
    assert!(
        try_plan_with(&model(), &run, Kernels::Fast)
            .unwrap()
            .peak_bytes
            > try_plan(&model(), &run).unwrap().peak_bytes
    );
}

#[test]
fn table_is_the_core_plan() {
    let run = RunConfig {
        seq_len: 8,
        chunk: 4,
        k_attn: Some(3),
        k_ff: None,
    };
    let plan = try_plan(&model(), &run).unwrap();
    let args = [&RUN_8_4_3[..], &["--kernels", "reference"]].concat();
    let j = json(&args);
    let rows = j["buffers"].as_array().unwrap();
    assert_eq!(rows.len(), plan.buffers().len());
    for (row, b) in rows.iter().zip(plan.buffers()) {
        assert_eq!(row["name"], b.name);
        assert_eq!(row["bytes"], b.bytes);
    }
    assert_eq!(j["peak_bytes"], plan.peak_bytes);
    assert_eq!(j["vanilla_scores_bytes"], plan.vanilla_scores_bytes);
    assert_eq!(j["phases"]["persistent"], plan.persistent_bytes);
    assert_eq!(j["run"]["k_attn"], 3);
    let file_len = std::fs::metadata(packed()).unwrap().len();
    assert_eq!(j["flash"]["file_bytes"], file_len);
    let b = read(packed());
    let weights: usize = PackedModel::parse(b.as_slice())
        .unwrap()
        .tensors()
        .map(|t| t.bytes())
        .sum();
    assert_eq!(j["flash"]["weight_bytes"], weights);
    assert_eq!(j["fits"], true, "no budget given: nothing to exceed");

    let o = budget(&args);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for b in plan.buffers() {
        assert!(
            o.stdout.contains(b.name),
            "{} not in:\n{}",
            b.name,
            o.stdout
        );
    }
    assert!(
        o.stdout.contains(&format!(
            "peak (arena size)            {:>12}",
            plan.peak_bytes
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("vanilla attention scores"),
        "{}",
        o.stdout
    );
}

#[test]
fn ram_verdict_names_the_buffer_that_overflows() {
    let run = RunConfig {
        seq_len: 8,
        chunk: 4,
        k_attn: None,
        k_ff: None,
    };
    let plan = try_plan(&model(), &run).unwrap();
    let seq = ["--seq", "8", "--chunk", "4", "--kernels", "reference"];
    let with = |ram: usize| {
        let r = ram.to_string();
        let mut a = seq.to_vec();
        a.extend_from_slice(&["--ram", &r]);
        budget(&a)
    };
    let o = with(plan.peak_bytes);
    assert_eq!(o.code, 0, "exactly the peak fits: {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("RAM: fits"), "{}", o.stdout);

    let o = with(plan.peak_bytes - 1);
    assert_eq!(o.code, 1, "one byte short: {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("RAM: DOES NOT FIT"), "{}", o.stdout);

    // Room for the persistent buffers and the queries only: the context buffer overflows.
    let o = with(plan.persistent_bytes + plan.q_bytes);
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains("buffer `ctx` (attention phase"),
        "{}",
        o.stdout
    );

    // Less than the hidden states.
    let o = with(plan.hidden_bytes - 1);
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains("buffer `hidden` (persistent phase"),
        "{}",
        o.stdout
    );

    let mut a = seq.to_vec();
    a.extend_from_slice(&["--ram", "1K"]);
    let j = json(&a);
    assert_eq!(j["fits"], false);
    assert_eq!(j["ram_budget"], 1024);
    let over = &j["ram_overflow"];
    assert!(over["in_use"].as_u64().unwrap() > 1024);
    assert_eq!(over["peak_over_budget"], plan.peak_bytes - 1024);
}

#[test]
fn flash_verdict() {
    let len = std::fs::metadata(packed()).unwrap().len();
    let o = budget(&["--seq", "4", "--flash", &len.to_string()]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("flash: fits"), "{}", o.stdout);
    let o = budget(&[
        "--seq",
        "4",
        "--flash",
        &(len - 1).to_string(),
        "--ram",
        "4M",
    ]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("flash: DOES NOT FIT"), "{}", o.stdout);
    assert!(o.stdout.contains("RAM: fits"), "{}", o.stdout);
}

#[test]
fn bad_arguments_exit_2() {
    for (args, needle) in [
        (vec!["--seq", "17"], "longer than the maximum of 16"),
        (vec!["--seq", "0"], "seq_len must be at least 1"),
        (
            vec!["--seq", "4", "--k-ff", "0"],
            "k_ff must be in 1..=d_ff",
        ),
        (vec!["--seq", "4", "--chunk", "0"], "chunk must be in"),
        (vec!["--seq", "4", "--ram", "4X"], "e.g. 65536, 64K, 4M"),
        (vec!["--ram", "4M"], "--seq"),
    ] {
        budget(&args).assert_error(needle);
    }
}

#[test]
fn help_explains() {
    let o = topkit(&["budget", "--help"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("64K (= 65536)"), "{}", o.stdout);
    assert!(o.stdout.contains("--emit-rust"), "{}", o.stdout);
    let o = topkit(&["--help"]);
    assert_eq!(o.code, 0);
    for cmd in ["pack", "inspect", "budget", "Exit codes"] {
        assert!(o.stdout.contains(cmd), "{cmd} not in {}", o.stdout);
    }
    let o = topkit(&["frobnicate"]);
    assert_eq!(o.code, 2);
}

fn without_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn emitted_rust_matches_the_compiled_golden_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plan.rs");
    let o = budget(&[&RUN_8_4_3[..], &["--ram", "64K", "--emit-rust", s(&path)]].concat());
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let fresh = std::fs::read_to_string(&path).unwrap();
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emitted_plan.rs");
    if std::env::var_os("TOPKIT_BLESS").is_some() {
        std::fs::write(&golden_path, &fresh).unwrap();
    }
    let golden = std::fs::read_to_string(&golden_path).unwrap();
    // Comments carry the peak as generated; the code must match exactly.
    assert_eq!(
        without_comments(&fresh),
        without_comments(&golden),
        "emitted Rust changed: rerun with TOPKIT_BLESS=1 and review tests/data/emitted_plan.rs"
    );
}

#[test]
fn emitted_constants_compile_and_agree_with_the_file() {
    // The golden copy is compiled into this test (module `emitted`): the constants are valid
    // `const` items and `plan()` runs at compile time.
    assert_eq!(emitted::MODEL, model());
    assert_eq!(
        emitted::RUN,
        RunConfig {
            seq_len: 8,
            chunk: 4,
            k_attn: Some(3),
            k_ff: None
        }
    );
    // An encoder, planned for `topkit embed`'s kernels.
    assert_eq!(emitted::KERNELS, Kernels::Fast);
    let plan = try_plan_with(&emitted::MODEL, &emitted::RUN, Kernels::Fast).unwrap();
    assert_eq!(emitted::PLAN, plan);
    assert_eq!(emitted::PEAK_BYTES, plan.peak_bytes);
    assert_eq!(emitted::RAM_BUDGET, 64 * 1024);
    assert_eq!(
        emitted::FLASH_BYTES as u64,
        std::fs::metadata(packed()).unwrap().len()
    );
    // What a firmware does with it: a static arena of exactly the peak.
    let mut storage = Box::new(topkit::ArenaStorage::<{ emitted::PEAK_BYTES }>::new());
    assert_eq!(storage.arena().remaining(), emitted::PEAK_BYTES);
}
