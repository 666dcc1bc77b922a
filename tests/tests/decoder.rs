//! The KV-cache decoder against the naive f64 reference (full-sequence, causal), top-k vs
//! dense, its errors, and the sampler (greedy, seeds, top-p against a sort-based reference).
//!
//! Tolerances (max abs error of logits of order 1, two layers, every position):
//! - [`TOL_REF`], engine vs the f64 reference. Std build: f32 rounding only. Micromath build:
//!   its `exp` (relative error 2.4e-3, in softmax and SiLU) dominates.
//! - [`TOL_SAME`], top-k with `k >=` the context vs dense in the same build: the same softmax
//!   normalised two ways (streaming vs the kept set), so f32 rounding (std) or micromath's
//!   `exp` error, which does not cancel between the two.
//! - [`TOL_CHUNK`], prefill chunk sizes against each other: the kernels' sums do not depend on
//!   the chunk; only RoPE's angle recurrence (f64, rounded to f32) starts from a different
//!   position, which could move an f32 angle by an ulp (not seen so far).

use proptest::prelude::*;
use topkit::sample::{Pcg32, Sampler, argmax, nucleus};
use topkit::{Arch, Arena, Decoder, Error, ModelConfig, RunConfig, Session, plan};
use topkit_tests::attention_ref::max_abs_diff;
use topkit_tests::decoder_ref::OwnedLm;
use topkit_tests::model_ref::{Dt, OwnedModel, Rng, config};

/// Measured: 7.8e-7 (std), 1.2e-3 (micromath).
const TOL_REF: f64 = if cfg!(feature = "std") { 1e-5 } else { 4e-3 };
/// Measured: 7.8e-7 (std), 1.2e-3 (micromath).
const TOL_SAME: f64 = if cfg!(feature = "std") { 5e-6 } else { 3e-3 };
/// Measured: 0 (both builds: the chunk changes nothing in practice).
const TOL_CHUNK: f64 = 1e-6;

/// A 16-byte aligned buffer of `bytes` bytes.
fn memory(bytes: usize) -> Vec<u128> {
    vec![0u128; bytes.div_ceil(16)]
}

fn ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

/// Runs `f` on a new session of `dec` for `run`, in an arena of exactly the planned size.
fn with_session<R>(dec: &Decoder<'_>, run: &RunConfig, f: impl FnOnce(&mut Session) -> R) -> R {
    let mut mem = memory(dec.plan(run).unwrap().peak_bytes);
    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
    f(&mut dec.start(run, &mut arena).unwrap())
}

/// Prefills `prompt` (collecting the logits of every prompt position), then decodes greedily
/// up to the context; returns every token and the logits of every position.
fn generate(dec: &Decoder<'_>, run: &RunConfig, prompt: &[u32]) -> (Vec<u32>, Vec<Vec<f32>>) {
    let peak = dec.plan(run).unwrap().peak_bytes;
    with_session(dec, run, |s| {
        let mut logits = Vec::new();
        s.feed_each(prompt, |pos, l| {
            assert_eq!(pos, logits.len());
            logits.push(l.to_vec());
        })
        .unwrap();
        let mut tokens = prompt.to_vec();
        while s.len() < s.capacity() {
            let next = argmax(logits.last().unwrap()).unwrap();
            tokens.push(next);
            logits.push(s.feed(&[next]).unwrap().to_vec());
        }
        assert_eq!(s.high_water(), peak);
        (tokens, logits)
    })
}

/// The grouped-query shapes of the tests: (d_model, n_heads, n_kv_heads, tied, weights).
const SHAPES: [(usize, usize, usize, bool, Dt); 4] = [
    (32, 4, 2, true, Dt::F32),
    (32, 4, 1, false, Dt::F32),
    (24, 3, 3, true, Dt::F16),
    (32, 8, 2, true, Dt::I8),
];

fn lm(i: usize) -> OwnedLm {
    let (d, h, kvh, tied, dt) = SHAPES[i];
    let cfg = ModelConfig {
        tie_embeddings: tied,
        vocab_size: 300,
        ..config(Arch::Llama, d, h, kvh, 48, 2, 64)
    };
    OwnedLm::random(cfg, dt, 40 + i as u64)
}

#[test]
fn prefill_and_decode_match_the_reference_at_every_step() {
    let n = 24;
    for (i, shape) in SHAPES.iter().enumerate() {
        let lm = lm(i);
        let views = lm.model.layer_views();
        let dec = lm.decoder(&views);
        let prompt = ids(&mut Rng::new(i as u64), 11, 300);
        let mut first: Option<(Vec<u32>, Vec<Vec<f32>>)> = None;
        for chunk in [1, 3, 4, 11, 16, 64] {
            let run = RunConfig::dense(n, chunk);
            let (tokens, logits) = generate(&dec, &run, &prompt);
            assert_eq!(tokens.len(), n);
            // The reference runs the whole final sequence at once; position t's logits only
            // see tokens 0..=t, so they are what each step had to produce.
            let want = lm.reference_logits(&tokens[..n - 1]);
            let err = logits[..n - 1]
                .iter()
                .zip(&want)
                .map(|(g, w)| max_abs_diff(g, w))
                .fold(0.0, f64::max);
            println!(
                "{:?} chunk {chunk}: max abs err of logits over {} steps {err:.2e} (tolerance {TOL_REF:.0e})",
                shape,
                n - 1
            );
            assert!(err < TOL_REF, "{:?} chunk {chunk}: {err}", shape);
            match &first {
                None => first = Some((tokens, logits)),
                Some((t0, l0)) => {
                    assert_eq!(&tokens, t0, "greedy tokens depend on the chunk");
                    let d = l0
                        .iter()
                        .zip(&logits)
                        .map(|(a, b)| max_abs_diff(a, b))
                        .fold(0.0, f64::max);
                    println!("  vs chunk 1: max abs diff {d:.2e} (tolerance {TOL_CHUNK:.0e})");
                    assert!(d < TOL_CHUNK, "chunk {chunk} vs 1: {d}");
                }
            }
        }
    }
}

#[test]
fn top_k_with_k_at_least_the_context_equals_dense() {
    let n = 20;
    for i in [0, 1, 3] {
        let lm = lm(i);
        let views = lm.model.layer_views();
        let dec = lm.decoder(&views);
        let prompt = ids(&mut Rng::new(7 + i as u64), 9, 300);
        let (tokens, dense) = generate(&dec, &RunConfig::dense(n, 4), &prompt);
        for k in [n, 64] {
            let run = RunConfig {
                k_attn: Some(k),
                ..RunConfig::dense(n, 4)
            };
            let (t, topk) = generate(&dec, &run, &prompt);
            let d = dense
                .iter()
                .zip(&topk)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0.0, f64::max);
            println!("{:?} k {k} vs dense: max abs diff {d:.2e}", SHAPES[i]);
            assert!(d < TOL_SAME, "k {k}: {d}");
            assert_eq!(t, tokens);
        }
        // A real top-k (k below the context) differs from dense but stays finite.
        let run = RunConfig {
            k_attn: Some(2),
            ..RunConfig::dense(n, 4)
        };
        let (_, topk) = generate(&dec, &run, &prompt);
        assert!(topk.iter().flatten().all(|v| v.is_finite()));
        let d = dense
            .iter()
            .zip(&topk)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0.0, f64::max);
        assert!(d > 1e-3, "top-2 equals dense: {d}");
    }
}

#[test]
fn decode_after_reset_repeats_itself() {
    let lm = lm(0);
    let views = lm.model.layer_views();
    let dec = lm.decoder(&views);
    with_session(&dec, &RunConfig::dense(16, 4), |s| {
        let prompt = [5, 17, 200, 3, 9];
        let a = s.feed(&prompt).unwrap().to_vec();
        let a2 = s.feed(&[argmax(&a).unwrap()]).unwrap().to_vec();
        s.reset();
        assert!(s.is_empty());
        let b = s.feed(&prompt).unwrap().to_vec();
        let b2 = s.feed(&[argmax(&b).unwrap()]).unwrap().to_vec();
        assert_eq!(a, b);
        assert_eq!(a2, b2);
    });
}

#[test]
fn errors_are_typed_and_leave_the_session_usable() {
    let lm = lm(1);
    let views = lm.model.layer_views();
    let dec = lm.decoder(&views);
    let run = RunConfig::dense(8, 3);
    let p = dec.plan(&run).unwrap();
    with_session(&dec, &run, |s| {
        assert_eq!(
            s.feed(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap_err(),
            Error::SeqTooLong { len: 9, max: 8 }
        );
        assert_eq!(
            s.feed(&[1, 300, 2]).unwrap_err(),
            Error::TokenOutOfRange {
                id: 300,
                vocab_size: 300
            }
        );
        assert!(matches!(s.feed(&[]), Err(Error::ShapeMismatch { .. })));
        assert!(s.is_empty(), "a refused call feeds nothing");
        s.feed(&[1, 2, 3, 4, 5, 6]).unwrap();
        s.feed(&[7]).unwrap();
        assert_eq!(
            s.feed(&[8, 9]).unwrap_err(),
            Error::SeqTooLong { len: 9, max: 8 }
        );
        assert_eq!(s.len(), 7);
        let last = s.feed(&[8]).unwrap().to_vec();
        assert_eq!(
            s.feed(&[9]).unwrap_err(),
            Error::SeqTooLong { len: 9, max: 8 }
        );
        // The same context fed in one call gives the same logits.
        s.reset();
        let again = s.feed(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap().to_vec();
        assert!(max_abs_diff(&last, &again) < TOL_CHUNK);
    });

    // Too small an arena is refused before anything is taken.
    let mut small = memory(p.peak_bytes - 16);
    let mut arena =
        Arena::new(&mut bytemuck::cast_slice_mut(&mut small)[..p.peak_bytes - 16]).unwrap();
    assert!(matches!(
        dec.start(&run, &mut arena),
        Err(Error::ArenaTooSmall { .. })
    ));
    assert_eq!(arena.high_water(), 0);
    // A run longer than the model allows.
    assert_eq!(
        dec.start(&RunConfig::dense(65, 4), &mut arena).unwrap_err(),
        Error::SeqTooLong { len: 65, max: 64 }
    );

    // Models the decoder cannot run, and heads of the wrong shape.
    let cfg = lm.model.config;
    let encoder = OwnedModel::random(
        ModelConfig {
            causal: false,
            ..cfg
        },
        Dt::F32,
        1,
    );
    let ev = encoder.layer_views();
    assert!(matches!(
        Decoder::new(encoder.model(&ev), lm.tok_emb.view(), None, None),
        Err(Error::Unsupported(_))
    ));
    let model = lm.model.model(&views);
    assert!(matches!(
        Decoder::new(model, lm.tok_emb.view(), None, None),
        Err(Error::InvalidConfig(_))
    ));
    let other = lm_with(ModelConfig {
        vocab_size: 299,
        ..cfg
    });
    assert!(matches!(
        Decoder::new(model, other.tok_emb.view(), None, Some(lm.tok_emb.view())),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Decoder::new(model, lm.tok_emb.view(), None, Some(other.tok_emb.view())),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Decoder::new(
            model,
            lm.tok_emb.view(),
            Some(lm.tok_emb.view()),
            Some(lm.tok_emb.view())
        ),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn lm_with(cfg: ModelConfig) -> OwnedLm {
    OwnedLm::random(cfg, Dt::F32, 99)
}

#[test]
fn plan_buffers_name_the_cache() {
    let cfg = lm(0).model.config;
    let p = plan(&cfg, &RunConfig::dense(64, 8));
    let names: Vec<_> = p.buffers().iter().map(|b| (b.name, b.bytes)).collect();
    let cache = 4 * cfg.n_layers * 64 * cfg.kv_dim();
    assert!(names.contains(&("k_cache", cache)));
    assert!(names.contains(&("v_cache", cache)));
    assert!(names.contains(&("logits", 4 * 300)));
    assert!(names.contains(&("hidden", 4 * 8 * cfg.d_model)));
    assert!(names.contains(&("kv_norm", 0)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any split of a context into calls (and any chunk) gives the logits of the whole
    /// context fed at once; calls past the context are refused without changing anything.
    #[test]
    fn any_split_of_the_context_gives_the_same_logits(
        pieces in proptest::collection::vec(1usize..7, 1..8),
        chunk in 1usize..9,
        k_attn in proptest::option::of(1usize..12),
        seed in 0u64..1000,
    ) {
        let lm = lm(0);
        let views = lm.model.layer_views();
        let dec = lm.decoder(&views);
        let n = 20;
        let run = RunConfig { k_attn, ..RunConfig::dense(n, chunk) };
        let ids = ids(&mut Rng::new(seed), pieces.iter().sum::<usize>(), 300);
        let p = dec.plan(&run).unwrap();
        let (mut m1, mut m2) = (memory(p.peak_bytes), memory(p.peak_bytes));
        let mut a1 = Arena::new(bytemuck::cast_slice_mut(&mut m1)).unwrap();
        let mut a2 = Arena::new(bytemuck::cast_slice_mut(&mut m2)).unwrap();
        let mut split = dec.start(&run, &mut a1).unwrap();
        let mut whole = dec.start(&run, &mut a2).unwrap();
        let mut start = 0;
        for len in pieces {
            let piece = &ids[start..start + len];
            if start + len > n {
                prop_assert_eq!(
                    split.feed(piece).unwrap_err(),
                    Error::SeqTooLong { len: start + len, max: n }
                );
                prop_assert_eq!(split.len(), start);
                break;
            }
            let got = split.feed(piece).unwrap().to_vec();
            start += len;
            whole.reset();
            let want = whole.feed(&ids[..start]).unwrap();
            prop_assert!(max_abs_diff(&got, want) < TOL_CHUNK);
        }
        prop_assert_eq!(split.high_water(), p.peak_bytes);
    }
}

// ---------------------------------------------------------------------------------------
// Sampling.

/// The nucleus by sorting: ids by (weight descending, id ascending), the shortest prefix whose
/// mass reaches `p * total` (same f64 target as the engine).
fn nucleus_by_sort(w: &[f32], p: f32) -> Vec<usize> {
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    let target = p as f64 * total;
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| w[b].partial_cmp(&w[a]).unwrap().then(a.cmp(&b)));
    let mut mass = 0.0;
    let mut keep = Vec::new();
    for i in order {
        if mass >= target {
            break;
        }
        mass += w[i] as f64;
        keep.push(i);
    }
    keep.sort_unstable();
    keep
}

fn nucleus_ids(w: &[f32], p: f32) -> (Vec<usize>, f64) {
    let mut got = Vec::new();
    let mass = nucleus(w, p).for_each(w, |i, _| got.push(i));
    (got, mass)
}

proptest! {
    /// Integer weights (many ties): every sum is exact in f64, so the nucleus must equal the
    /// sort-based one exactly.
    #[test]
    fn top_p_nucleus_equals_the_sorted_prefix(
        w in proptest::collection::vec(0u8..12, 1..200),
        p in 0.01f32..=1.0,
    ) {
        prop_assume!(w.iter().any(|&x| x > 0));
        let w: Vec<f32> = w.into_iter().map(f32::from).collect();
        let (got, mass) = nucleus_ids(&w, p);
        prop_assert_eq!(&got, &nucleus_by_sort(&w, p));
        let total: f64 = w.iter().map(|&x| x as f64).sum();
        prop_assert!(mass >= p as f64 * total);
    }

    /// Real-valued weights: the nucleus is a top set, reaches the mass, and is the smallest
    /// such set (dropping its least probable token falls short), up to f64 rounding of sums
    /// taken in different orders (1e-9 relative).
    #[test]
    fn top_p_nucleus_is_the_smallest_top_set(
        logits in proptest::collection::vec(-8.0f32..8.0, 1..300),
        p in 0.01f32..=1.0,
    ) {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
        let total: f64 = w.iter().map(|&x| x as f64).sum();
        let target = p as f64 * total;
        let (got, mass) = nucleus_ids(&w, p);
        let eps = 1e-9 * total;
        prop_assert!(mass >= target - eps);
        let min_in = got.iter().map(|&i| w[i]).fold(f32::INFINITY, f32::min);
        let max_out = (0..w.len()).filter(|i| !got.contains(i)).map(|i| w[i]).fold(0.0, f32::max);
        prop_assert!(max_out <= min_in);
        prop_assert!(mass - (min_in as f64) < target + eps);
        let want = nucleus_by_sort(&w, p);
        let want_mass: f64 = want.iter().map(|&i| w[i] as f64).sum();
        prop_assert!(got == want || (want_mass - target).abs() < eps || (mass - target).abs() < eps);
    }

    /// Greedy is the first largest logit.
    #[test]
    fn greedy_is_the_argmax(logits in proptest::collection::vec(-4i8..4, 1..100)) {
        let mut l: Vec<f32> = logits.iter().map(|&x| f32::from(x)).collect();
        let best = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let want = l.iter().position(|&x| x == best).unwrap() as u32;
        prop_assert_eq!(Sampler::greedy().sample(&mut l).unwrap(), want);
        // A sampler at a vanishing temperature agrees unless two logits tie for the top.
        let ties = l.iter().filter(|&&x| x == best).count();
        let mut s = Sampler::new(1e-4, 1.0, 3).unwrap();
        if ties == 1 {
            prop_assert_eq!(s.sample(&mut l).unwrap(), want);
        }
    }
}

#[test]
fn a_seed_fixes_the_draws() {
    let logits: Vec<f32> = (0..500).map(|i| ((i * 37 % 101) as f32) / 25.0).collect();
    let draw = |seed: u64, t: f32, p: f32| -> Vec<u32> {
        let mut s = Sampler::new(t, p, seed).unwrap();
        (0..200)
            .map(|_| s.sample(&mut logits.clone()).unwrap())
            .collect()
    };
    for (t, p) in [(1.0, 1.0), (0.7, 0.9), (1.5, 0.5)] {
        assert_eq!(draw(1, t, p), draw(1, t, p));
        assert_ne!(draw(1, t, p), draw(2, t, p));
    }
    // Top-p only ever draws from the nucleus.
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
    let (nuc, _) = nucleus_ids(&w, 0.5);
    assert!(nuc.len() < 500);
    assert!(
        draw(5, 1.0, 0.5)
            .iter()
            .all(|&i| nuc.contains(&(i as usize)))
    );
}

#[test]
fn draws_follow_the_distribution() {
    // Probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1; 40000 draws: each frequency within
    // 5 standard deviations (sqrt(p (1 - p) / n) <= 0.0025).
    let probs = [0.1f32, 0.2, 0.3, 0.4];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let mut s = Sampler::new(1.0, 1.0, 11).unwrap();
    let mut counts = [0usize; 4];
    let n = 40000;
    for _ in 0..n {
        counts[s.sample(&mut logits.clone()).unwrap() as usize] += 1;
    }
    // Micromath's exp is off by up to 2.4e-3 relative, which moves a probability by < 1e-3.
    for (c, p) in counts.iter().zip(probs) {
        let f = *c as f64 / n as f64;
        assert!((f - p as f64).abs() < 5.0 * 0.0025 + 1e-3, "{counts:?}");
    }
    // Top-p 0.65 keeps {3, 2} (mass 0.7): renormalised 3/7 and 4/7.
    let mut s = Sampler::new(1.0, 0.65, 12).unwrap();
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&mut logits.clone()).unwrap() as usize] += 1;
    }
    assert_eq!(counts[0] + counts[1], 0);
    let f = counts[3] as f64 / n as f64;
    assert!((f - 4.0 / 7.0).abs() < 0.0125 + 1e-3, "{counts:?}");
}

#[test]
fn sampler_arguments_are_checked() {
    for (t, p) in [
        (-1.0, 1.0),
        (f32::NAN, 1.0),
        (f32::INFINITY, 0.5),
        (1.0, 0.0),
        (1.0, 1.5),
        (1.0, f32::NAN),
    ] {
        assert!(matches!(
            Sampler::new(t, p, 0),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        Sampler::greedy().sample(&mut []),
        Err(Error::ShapeMismatch { .. })
    ));
    // Infinite or NaN logits never break a draw.
    let mut s = Sampler::new(1.0, 0.9, 1).unwrap();
    assert_eq!(s.sample(&mut [0.0, f32::INFINITY, 1.0]).unwrap(), 1);
    assert_eq!(s.sample(&mut [f32::NAN, 2.0, f32::NAN]).unwrap(), 1);
    let mut g = Pcg32::new(0);
    let x = g.next_f64();
    assert!((0.0..1.0).contains(&x));
}
