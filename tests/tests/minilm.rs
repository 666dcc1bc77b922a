//! all-MiniLM-L6-v2 end to end (packed file -> WordPiece -> encoder -> pooled embedding),
//! against sentence-transformers' embeddings (tests/data/minilm_golden.json).
//!
//! Bars (cosine to the reference, every text): f32 dense at least 0.9999 in the std build and
//! at least 0.999 in the micromath build; int8 dense at least 0.99 in both. Top-k with k at least the sequence
//! length equals dense within 1e-5 (std) / 5e-5 (micromath, whose `exp` is approximate and
//! enters dense's online softmax and top-k's kept-set softmax differently): max abs difference
//! of the unit-length embeddings. The fast kernels (`Kernels::Fast`) keep the same bars.

use topkit::encoder::{Encoder, layers};
use topkit::format::PackedModel;
use topkit::kernels::Kernels;
use topkit::tokenizer::WordPiece;
use topkit::{Arena, KvType, RunConfig};
use topkit_tests::minilm::{cosine, golden, packed};

#[cfg(feature = "std")]
const F32_BAR: f64 = 0.9999;
#[cfg(not(feature = "std"))]
const F32_BAR: f64 = 0.999;
const INT8_BAR: f64 = 0.99;
#[cfg(feature = "std")]
const TOPK_EQ_DENSE: f32 = 1e-5;
#[cfg(not(feature = "std"))]
const TOPK_EQ_DENSE: f32 = 5e-5;

/// Embeds every golden text with `k_attn`; returns (text, cosine to reference, embedding).
fn run(dtype: &str, k_attn: Option<usize>) -> Vec<(String, f64, Vec<f32>)> {
    run_with(dtype, k_attn, Kernels::Reference)
}

/// [`run`] with the chosen kernels.
fn run_with(dtype: &str, k_attn: Option<usize>, kernels: Kernels) -> Vec<(String, f64, Vec<f32>)> {
    run_kv(dtype, k_attn, kernels, KvType::F32)
}

/// [`run_with`] with the keys and values stored as `kv`.
fn run_kv(
    dtype: &str,
    k_attn: Option<usize>,
    kernels: Kernels,
    kv: KvType,
) -> Vec<(String, f64, Vec<f32>)> {
    let words = packed(dtype);
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let pm = PackedModel::parse(bytes).unwrap();
    let layers = layers(&pm).unwrap();
    let enc = Encoder::from_packed(&pm, &layers)
        .unwrap()
        .with_kernels(kernels)
        .with_kv(kv);
    let tok = pm.tokenizer();
    let wp = WordPiece::from_view(tok).unwrap();
    let (max_seq, cases) = golden();
    let run = RunConfig {
        seq_len: max_seq,
        chunk: 16,
        k_attn,
        k_ff: None,
    };
    let plan = enc.model().plan(&run).unwrap();
    let mut mem = vec![0u128; plan.peak_bytes / 16];
    let mut out = Vec::new();
    for case in cases {
        let mut ids = vec![0u32; max_seq];
        let n = wp.encode(&case.text, &mut ids).unwrap().len;
        assert_eq!(
            &ids[..n],
            case.ids.as_slice(),
            "token ids of {:?}",
            case.text
        );
        let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
        let mut e = vec![0f32; enc.config().d_model];
        enc.embed(&run, &ids[..n], &mut arena, &mut e).unwrap();
        assert_eq!(arena.high_water(), plan.peak_bytes);
        out.push((case.text, cosine(&e, &case.embedding), e));
    }
    out
}

fn assert_bar(dtype: &str, results: &[(String, f64, Vec<f32>)], bar: f64) {
    let worst = results.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    eprintln!("{dtype}: {} texts, min cosine {worst:.7}", results.len());
    for (text, cos, _) in results {
        assert!(*cos >= bar, "{dtype}: cosine {cos:.7} < {bar} for {text:?}");
    }
}

#[test]
fn f32_dense_matches_reference() {
    assert_bar("f32", &run("f32", None), F32_BAR);
}

#[test]
fn int8_dense_matches_reference() {
    assert_bar("int8", &run("int8", None), INT8_BAR);
}

/// The host fast path (int8 activations with one scale per 32 elements; AVX2/FMA when the CPU
/// has it) keeps the int8 bar, and f32 with the fast kernels keeps the f32 bar. Top-k 32 is
/// lossy on the long texts whatever the kernels, so its fast run is held to the int8 bar
/// against the reference kernels' top-k 32 run.
#[test]
fn fast_kernels_match_reference() {
    assert_bar(
        "int8 fast",
        &run_with("int8", None, Kernels::Fast),
        INT8_BAR,
    );
    assert_bar("f32 fast", &run_with("f32", None, Kernels::Fast), F32_BAR);
    let slow = run_with("int8", Some(32), Kernels::Reference);
    let fast = run_with("int8", Some(32), Kernels::Fast);
    let vs: Vec<_> = slow
        .iter()
        .zip(&fast)
        .map(|((t, _, a), (_, _, b))| (t.clone(), cosine(b, a), b.clone()))
        .collect();
    assert_bar("int8 fast top-k 32 vs reference top-k 32", &vs, INT8_BAR);
}

/// Keys and values stored as int8 (one scale per head row) or f16 keep every golden text's
/// embedding at cosine >= 0.999 to the f32 keys' run, with both kernels. (The int8 file with
/// the fast kernels is left out: with stored keys its feed-forward runs a chunk at a time
/// instead of all tokens at once, and the fused int8 feed-forward rounds differently in the
/// two ways, 0.9988 on the two-token empty text for f16 keys as for int8 keys; both runs are
/// as close to the reference, see `int8_dense_matches_reference`.)
#[test]
fn stored_keys_keep_the_embeddings() {
    for (dtype, kernels) in [
        ("f32", Kernels::Reference),
        ("f32", Kernels::Fast),
        ("int8", Kernels::Reference),
    ] {
        let base = run_kv(dtype, None, kernels, KvType::F32);
        // f16 once (it is the closer of the two), int8 with every kernel and file.
        let kinds: &[KvType] = if kernels == Kernels::Reference && dtype == "f32" {
            &[KvType::F16, KvType::Int8]
        } else {
            &[KvType::Int8]
        };
        for &kv in kinds {
            let got = run_kv(dtype, None, kernels, kv);
            let vs: Vec<_> = base
                .iter()
                .zip(&got)
                .map(|((t, _, a), (_, _, b))| (t.clone(), cosine(b, a), b.clone()))
                .collect();
            assert!(vs.iter().all(|r| r.1 < 1.0 - 1e-12 || kv == KvType::F16));
            assert_bar(
                &format!("{dtype} {kernels:?} {kv:?} keys vs f32 keys"),
                &vs,
                0.999,
            );
        }
    }
}

#[test]
fn topk_with_k_at_least_seq_equals_dense() {
    let dense = run("f32", None);
    let topk = run("f32", Some(256));
    for ((text, _, a), (_, _, b)) in dense.iter().zip(&topk) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= TOPK_EQ_DENSE,
            "top-k(256) differs from dense by {diff} on {text:?}"
        );
    }
}
