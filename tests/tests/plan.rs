//! The memory plan against the engines: measured high-water == plan (the full-sequence
//! encoder, and the decoder's prefill and decode steps) for both kernel choices, the fast
//! kernels' rows from the documented formulas (and none in a reference plan), linear growth
//! in N of both layouts, the layer stack against a naive f64 reference, and the error cases.

use topkit::arena::padded;
use topkit::kernels::Kernels;
use topkit::model::forward;
use topkit::{
    Arch, Arena, Error, FfnKind, ModelConfig, RunConfig, plan, plan_with, try_plan, try_plan_with,
};
use topkit_tests::attention_ref::max_abs_diff;
use topkit_tests::decoder_ref::OwnedLm;
use topkit_tests::kernel_checks::bits;
use topkit_tests::model_ref::{Dt, OwnedModel, Rng, config};

/// A pre-norm (Llama-style) encoder: RoPE, RMSNorm, gated FFN, bidirectional attention. The
/// full-sequence path still runs pre-norm blocks; causal models go to the decoder.
fn llama_encoder(
    d: usize,
    h: usize,
    kvh: usize,
    d_ff: usize,
    layers: usize,
    max: usize,
) -> ModelConfig {
    ModelConfig {
        causal: false,
        ..config(Arch::Llama, d, h, kvh, d_ff, layers, max)
    }
}

/// Max abs error of the engine (f32) against the f64 reference after 2 layers, on outputs of
/// order 1. Std build: f32 rounding only. Micromath build: its exp approximation (softmax,
/// SiLU, GELU) dominates.
/// Measured: 6e-7 (std), 5.6e-4 (micromath).
const TOL_REF: f64 = if cfg!(feature = "std") { 5e-6 } else { 2e-3 };
/// Top-k with k >= keys vs dense in the same build: the same softmax, up to f32 rounding (std)
/// or up to micromath's exp, whose relative error (2e-3) does not cancel between the streaming
/// (dense) and the kept-set (top-k) normalisations.
/// Measured: 4.8e-7 (std), 3.8e-4 (micromath).
const TOL_SAME: f64 = if cfg!(feature = "std") { 5e-6 } else { 1e-3 };

/// all-MiniLM-L6-v2's shape, with a context of `max_seq`.
fn minilm(max_seq: usize) -> ModelConfig {
    config(Arch::Bert, 384, 12, 12, 1536, 6, max_seq)
}

/// SmolLM2-135M's shape (its vocabulary and a context of 8192).
fn smollm2() -> ModelConfig {
    ModelConfig {
        vocab_size: 49152,
        ..config(Arch::Llama, 576, 9, 3, 1536, 30, 8192)
    }
}

/// A 16-byte aligned window of exactly `len` bytes inside `buf`.
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    buf.clear();
    buf.resize(len + 16, 0);
    let off = buf.as_ptr().align_offset(16);
    &mut buf[off..off + len]
}

fn input(rng: &mut Rng, n: usize, d: usize) -> Vec<f32> {
    rng.vec(n * d, -1.0, 1.0)
}

/// Some keys masked out, never the first (so every query sees at least one key).
fn mask(rng: &mut Rng, n: usize) -> Vec<bool> {
    (0..n)
        .map(|j| j == 0 || !rng.next_u64().is_multiple_of(4))
        .collect()
}

/// Runs `forward` in an arena of exactly `bytes` bytes; returns the output and the high-water.
fn run_in(
    m: &OwnedModel,
    run: &RunConfig,
    x: &[f32],
    valid: Option<&[bool]>,
    bytes: usize,
) -> Result<(Vec<f32>, usize), Error> {
    run_in_with(Kernels::Reference, m, run, x, valid, bytes)
}

/// [`run_in`] with the layer stack run by `kernels`.
fn run_in_with(
    kernels: Kernels,
    m: &OwnedModel,
    run: &RunConfig,
    x: &[f32],
    valid: Option<&[bool]>,
    bytes: usize,
) -> Result<(Vec<f32>, usize), Error> {
    let views = m.layer_views();
    let model = m.model(&views).with_kernels(kernels);
    let mut buf = Vec::new();
    let mut arena = Arena::new(aligned(&mut buf, bytes))?;
    let out = forward(&model, run, x, valid, &mut arena)?.to_vec();
    Ok((out, arena.high_water()))
}

/// Runs a decoder session in an arena of exactly `bytes` bytes: feeds `ids` in the given
/// pieces (a prefill, then decode steps); returns the last logits and the high-water mark.
fn decode_in(
    kernels: Kernels,
    lm: &OwnedLm,
    run: &RunConfig,
    pieces: &[&[u32]],
    bytes: usize,
) -> Result<(Vec<f32>, usize), Error> {
    let views = lm.model.layer_views();
    let dec = lm.decoder_with(&views, kernels);
    let mut buf = Vec::new();
    let mut arena = Arena::new(aligned(&mut buf, bytes))?;
    let mut s = dec.start(run, &mut arena)?;
    let mut last = Vec::new();
    for p in pieces {
        last = s.feed(p)?.to_vec();
    }
    let hw = s.high_water();
    assert_eq!(arena.high_water(), hw);
    Ok((last, hw))
}

#[test]
fn high_water_equals_plan_on_a_grid() {
    high_water_equals_plan(Kernels::Reference);
}

/// The fast kernels' buffers are in the plan too: the same grid with [`Kernels::Fast`]
/// (int8 activations, block attention, the encoder's all-tokens feed-forward).
#[test]
fn fast_high_water_equals_plan_on_a_grid() {
    high_water_equals_plan(Kernels::Fast);
}

/// Every engine and run of a grid with `kernels`: the arena's high-water mark equals
/// `plan_with(.., kernels).peak_bytes`, and 16 bytes less is [`Error::ArenaTooSmall`].
fn high_water_equals_plan(kernels: Kernels) {
    // (arch, causal, d_model, n_heads, n_kv_heads, d_ff)
    let shapes = [
        (Arch::Bert, false, 16, 4, 4, 32),
        (Arch::Bert, false, 24, 2, 2, 32),
        (Arch::Llama, false, 16, 4, 2, 32),
        (Arch::Llama, true, 16, 4, 2, 32),
        (Arch::Llama, true, 16, 4, 1, 32),
        (Arch::Llama, true, 12, 3, 3, 32),
        // The fused int8 feed-forward's shapes (d_model 16 k, d_ff 64 k) on x86-64.
        (Arch::Bert, false, 32, 2, 2, 64),
    ];
    let runs = [(1, 4), (7, 3), (16, 16), (20, 8), (33, 5)];
    let mut rng = Rng::new(7);
    let (mut cases, mut decoder_cases) = (0, 0);
    for (si, &(arch, causal, d, h, kvh, d_ff)) in shapes.iter().enumerate() {
        let cfg = ModelConfig {
            causal,
            ..config(arch, d, h, kvh, d_ff, 2, 64)
        };
        // f16 and int8 weights on one shape of each engine; f32 elsewhere.
        let dt = match si {
            1 | 3 => Dt::F16,
            2 | 4 | 6 => Dt::I8,
            _ => Dt::F32,
        };
        let m = OwnedModel::random(cfg, dt, 100 + si as u64);
        let lm = causal.then(|| OwnedLm::random(cfg, dt, 100 + si as u64));
        for &(seq, chunk) in &runs {
            for k_attn in [None, Some(3), Some(64)] {
                for k_ff in [None, Some(5)] {
                    let run = RunConfig {
                        seq_len: seq,
                        chunk,
                        k_attn,
                        k_ff,
                    };
                    let p = plan_with(&cfg, &run, kernels);
                    assert_eq!(p.decoder, causal);
                    assert_eq!(p.kernels, kernels);
                    let ends = p.buffers().map(|b| b.offset + b.bytes);
                    assert_eq!(ends.into_iter().max(), Some(p.peak_bytes));
                    if let Some(lm) = &lm {
                        let ids: Vec<u32> = (0..seq)
                            .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
                            .collect();
                        // A whole prefill; a prefill then decode steps; one decode step alone.
                        let split = seq / 2;
                        let steps: Vec<&[u32]> = std::iter::once(&ids[..split.max(1)])
                            .chain(ids[split.max(1)..].chunks(1))
                            .collect();
                        for pieces in [vec![&ids[..]], steps, vec![&ids[..1]]] {
                            let (logits, hw) = decode_in(kernels, lm, &run, &pieces, p.peak_bytes)
                                .unwrap_or_else(|e| panic!("{cfg:?} {run:?}: {e}"));
                            assert_eq!(hw, p.peak_bytes, "decoder d={d} h={h}/{kvh} {run:?}");
                            assert_eq!(logits.len(), cfg.vocab_size);
                            assert!(logits.iter().all(|v| v.is_finite()));
                            let err = decode_in(kernels, lm, &run, &pieces, p.peak_bytes - 16);
                            assert!(
                                matches!(err, Err(Error::ArenaTooSmall { .. })),
                                "{run:?}: {err:?}"
                            );
                            decoder_cases += 1;
                        }
                        continue;
                    }
                    // Full length, and one token short (buffers are sized by the run anyway).
                    for n in [seq, seq.saturating_sub(1).max(1)] {
                        let x = input(&mut rng, n, d);
                        let valid = mask(&mut rng, n);
                        let (out, hw) =
                            run_in_with(kernels, &m, &run, &x, Some(&valid), p.peak_bytes)
                                .unwrap_or_else(|e| panic!("{cfg:?} {run:?}: {e}"));
                        assert_eq!(hw, p.peak_bytes, "{arch:?} d={d} h={h}/{kvh} {run:?}");
                        assert!(out.iter().all(|v| v.is_finite()));
                        let err =
                            run_in_with(kernels, &m, &run, &x, Some(&valid), p.peak_bytes - 16);
                        assert!(
                            matches!(err, Err(Error::ArenaTooSmall { .. })),
                            "{run:?}: {err:?}"
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 4 * 5 * 3 * 2 * 2);
    assert_eq!(decoder_cases, 3 * 5 * 3 * 2 * 3);
}

/// `b` of `peak(N) = a N + b`, spelled out from the formulas in `topkit::plan`'s docs (not
/// from `Plan` or the scratch functions).
fn phase_max(cfg: &ModelConfig, run: &RunConfig) -> usize {
    let c = run.chunk.min(run.seq_len);
    let pre = usize::from(matches!(cfg.arch, Arch::Llama));
    let chunk = padded(4 * c * cfg.d_model);
    let topk_scratch = |k: usize| padded(4 * c * k) + padded(2 * c * k) + padded(4 * c);
    let attn_scratch = run.k_attn.map_or(padded(8 * c), topk_scratch);
    let ffn_scratch = run.k_ff.map_or(0, |k| topk_scratch(k.min(cfg.d_ff)));
    let kv_phase = if cfg.causal { 0 } else { pre * chunk };
    let attn_phase = 2 * chunk + attn_scratch;
    let ffn_phase = pre * chunk + chunk + ffn_scratch;
    kv_phase.max(attn_phase).max(ffn_phase)
}

/// `(a, b)` of `peak(N) = a N + b` from the module docs' formulas, for `N >= chunk`.
fn linear(cfg: &ModelConfig, run: &RunConfig) -> (usize, usize) {
    let c = run.chunk;
    let phases = phase_max(cfg, &RunConfig { seq_len: c, ..*run });
    if cfg.causal {
        let a = 8 * cfg.n_layers * cfg.kv_dim();
        let b = padded(4 * c * cfg.d_model) + padded(4 * cfg.vocab_size) + phases;
        (a, b)
    } else {
        (4 * (cfg.d_model + 2 * cfg.kv_dim()), phases)
    }
}

#[test]
fn peak_is_linear_in_seq_len() {
    let cfgs = [
        minilm(8192),
        config(Arch::Llama, 64, 8, 2, 160, 3, 8192),
        llama_encoder(64, 8, 2, 160, 3, 8192),
        config(Arch::Bert, 32, 4, 4, 64, 1, 8192),
        smollm2(),
    ];
    for cfg in cfgs {
        for (chunk, k_attn, k_ff) in [
            (16, Some(32), None),
            (8, None, Some(8)),
            (1, Some(1), None),
            (5, Some(300), Some(40)),
        ] {
            let (a, b) = linear(
                &cfg,
                &RunConfig {
                    seq_len: chunk,
                    chunk,
                    k_attn,
                    k_ff,
                },
            );
            let mut prev = None;
            for n in (chunk..chunk + 300).chain([1000, 2048, 4096, 8192]) {
                let run = RunConfig {
                    seq_len: n,
                    chunk,
                    k_attn,
                    k_ff,
                };
                let p = try_plan(&cfg, &run).unwrap();
                assert_eq!(p.peak_bytes, a * n + b, "{cfg:?} {run:?}");
                assert_eq!(p.vanilla_scores_bytes, 4 * cfg.n_heads * n * n);
                let ends = p.buffers().map(|b| b.offset + b.bytes);
                assert_eq!(ends.into_iter().max(), Some(p.peak_bytes));
                if let Some((pn, pp)) = prev
                    && n == pn + 1
                {
                    assert_eq!(p.peak_bytes - pp, a);
                }
                prev = Some((n, p.peak_bytes));
            }
        }
    }
    // The numbers of the plan module's docs.
    let run = RunConfig {
        k_attn: Some(32),
        ..RunConfig::dense(2048, 16)
    };
    assert_eq!(linear(&smollm2(), &run), (46080, 310336));
    assert_eq!(plan(&smollm2(), &run).peak_bytes, 94682176);
}

#[test]
fn chunk_is_capped_at_seq_len() {
    let cfg = config(Arch::Llama, 16, 4, 2, 32, 1, 64);
    let a = plan(
        &cfg,
        &RunConfig {
            k_attn: Some(4),
            ..RunConfig::dense(5, 5)
        },
    );
    let b = plan(
        &cfg,
        &RunConfig {
            k_attn: Some(4),
            ..RunConfig::dense(5, 64)
        },
    );
    assert_eq!(b.chunk, 5);
    assert_eq!(a.peak_bytes, b.peak_bytes);
}

/// The closing note's table: MiniLM-like (6 layers, 384 wide, 12 heads, d_ff 1536), top-k
/// k = 32, C = 16. Run with `--nocapture` to print it.
#[test]
fn minilm_table() {
    let cfg = minilm(4096);
    let cfg = ModelConfig {
        vocab_size: 30522,
        ..cfg
    };
    let a = 4 * (cfg.d_model + 2 * cfg.kv_dim());
    let b = phase_max(
        &cfg,
        &RunConfig {
            k_attn: Some(32),
            ..RunConfig::dense(16, 16)
        },
    );
    println!("peak_bytes(N) = {a} * N + {b}");
    println!(
        "| seq_len | peak bytes (top-k, k=32, C=16) | dense N x N scores (12 heads, f32) | ratio |"
    );
    println!("|---:|---:|---:|---:|");
    for n in [128, 256, 512, 1024, 4096] {
        let p = plan(
            &cfg,
            &RunConfig {
                k_attn: Some(32),
                ..RunConfig::dense(n, 16)
            },
        );
        assert_eq!(p.peak_bytes, a * n + b);
        assert_eq!(p.vanilla_scores_bytes, 12 * n * n * 4);
        println!(
            "| {n} | {} | {} | {:.2} |",
            p.peak_bytes,
            p.vanilla_scores_bytes,
            p.vanilla_scores_bytes as f64 / p.peak_bytes as f64
        );
    }
    let p = plan(
        &cfg,
        &RunConfig {
            k_attn: Some(32),
            ..RunConfig::dense(256, 16)
        },
    );
    for buf in p.buffers() {
        println!(
            "{:>14} {:>10} @ {:>8} {:?}",
            buf.name, buf.bytes, buf.offset, buf.phase
        );
    }
}

#[test]
fn forward_matches_naive_reference() {
    let mut rng = Rng::new(11);
    for (arch, kvh, dt, seed) in [
        (Arch::Bert, 4, Dt::F32, 1),
        (Arch::Llama, 2, Dt::F32, 2),
        (Arch::Llama, 1, Dt::F16, 3),
        (Arch::Bert, 4, Dt::I8, 4),
    ] {
        // Pre-norm blocks with bidirectional attention: causal models are the decoder's
        // (tests/tests/decoder.rs).
        let cfg = ModelConfig {
            causal: false,
            ..config(arch, 32, 4, kvh, 48, 2, 64)
        };
        let m = OwnedModel::random(cfg, dt, seed);
        let n = 13;
        let x = input(&mut rng, n, cfg.d_model);
        let valid = mask(&mut rng, n);
        let want = m.reference(&x, Some(&valid));
        for chunk in [1, 4, 13, 32] {
            let run = RunConfig::dense(16, chunk);
            let p = plan(&cfg, &run);
            let (got, _) = run_in(&m, &run, &x, Some(&valid), p.peak_bytes).unwrap();
            let err = max_abs_diff(&got, &want);
            println!(
                "{arch:?} {dt:?} chunk {chunk}: max abs err {err:.2e} (tolerance {TOL_REF:.0e})"
            );
            assert!(
                err < TOL_REF,
                "{arch:?} {dt:?} chunk {chunk}: max err {err}"
            );
        }
        // No padding mask at all.
        let run = RunConfig::dense(n, 5);
        let (got, _) = run_in(&m, &run, &x, None, plan(&cfg, &run).peak_bytes).unwrap();
        assert!(max_abs_diff(&got, &m.reference(&x, None)) < TOL_REF);
    }
}

#[test]
fn top_k_with_k_at_least_keys_equals_dense() {
    let mut rng = Rng::new(12);
    for arch in [Arch::Bert, Arch::Llama] {
        let kv_heads = if arch == Arch::Bert { 4 } else { 2 };
        let cfg = ModelConfig {
            causal: false,
            ..config(arch, 32, 4, kv_heads, 48, 2, 64)
        };
        let m = OwnedModel::random(cfg, Dt::F32, 5);
        let n = 20;
        let x = input(&mut rng, n, cfg.d_model);
        let valid = mask(&mut rng, n);
        let dense = RunConfig::dense(n, 6);
        let (want, _) =
            run_in(&m, &dense, &x, Some(&valid), plan(&cfg, &dense).peak_bytes).unwrap();
        for (k_attn, k_ff) in [
            (Some(n), None),
            (Some(64), None),
            (None, Some(cfg.d_ff)),
            (Some(n), Some(cfg.d_ff)),
        ] {
            let run = RunConfig {
                k_attn,
                k_ff,
                ..dense
            };
            let (got, _) = run_in(&m, &run, &x, Some(&valid), plan(&cfg, &run).peak_bytes).unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!("{arch:?} k_attn {k_attn:?} k_ff {k_ff:?} vs dense: max abs diff {err:.2e}");
            assert!(
                (err as f64) < TOL_SAME,
                "{arch:?} {k_attn:?} {k_ff:?}: {err}"
            );
        }
        // A real top-k (k < keys) differs from dense but stays finite.
        let run = RunConfig {
            k_attn: Some(2),
            ..dense
        };
        let (got, _) = run_in(&m, &run, &x, Some(&valid), plan(&cfg, &run).peak_bytes).unwrap();
        assert!(got.iter().all(|v| v.is_finite()));
        assert!(got.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}

#[test]
fn error_cases() {
    let cfg = llama_encoder(16, 4, 2, 32, 2, 24);
    let m = OwnedModel::random(cfg, Dt::F32, 9);
    let views = m.layer_views();
    let model = m.model(&views);
    let run = RunConfig::dense(8, 4);
    let p = plan(&cfg, &run);
    assert_eq!(model.plan(&run), Ok(p));
    let mut buf = Vec::new();
    let mut rng = Rng::new(3);

    // A causal model's plan is the decoder's: the full-sequence pass refuses it.
    let causal = ModelConfig {
        causal: true,
        ..cfg
    };
    let cm = OwnedModel::random(causal, Dt::F32, 9);
    let cviews = cm.layer_views();
    let x = input(&mut rng, 4, 16);
    let mut arena = Arena::new(aligned(&mut buf, plan(&causal, &run).peak_bytes)).unwrap();
    assert!(matches!(
        forward(&cm.model(&cviews), &run, &x, None, &mut arena),
        Err(Error::Unsupported(_))
    ));

    // More tokens than the run's buffers hold.
    let x = input(&mut rng, 9, 16);
    let mut arena = Arena::new(aligned(&mut buf, p.peak_bytes)).unwrap();
    assert_eq!(
        forward(&model, &run, &x, None, &mut arena).unwrap_err(),
        Error::SeqTooLong { len: 9, max: 8 }
    );
    // A run longer than the model's max_seq.
    let long = RunConfig::dense(25, 4);
    assert_eq!(
        try_plan(&cfg, &long).unwrap_err(),
        Error::SeqTooLong { len: 25, max: 24 }
    );
    let mut arena = Arena::new(aligned(&mut buf, p.peak_bytes)).unwrap();
    assert_eq!(
        forward(&model, &long, &x, None, &mut arena).unwrap_err(),
        Error::SeqTooLong { len: 25, max: 24 }
    );
    // Input not a whole number of rows; mask of the wrong length.
    let mut arena = Arena::new(aligned(&mut buf, p.peak_bytes)).unwrap();
    assert!(matches!(
        forward(&model, &run, &x[..20], None, &mut arena),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        forward(&model, &run, &[], None, &mut arena),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        forward(&model, &run, &x[..32], Some(&[true; 3]), &mut arena),
        Err(Error::ShapeMismatch {
            what: "padding mask",
            expected: 2,
            found: 3
        })
    ));

    // Wrong weight shapes.
    let mut bad = m.layer_views();
    bad[1].k = m.layers[1].q.view(); // 16 x 16 instead of 8 x 16
    assert!(matches!(
        topkit::Model::new(cfg, &bad, None),
        Err(Error::ShapeMismatch {
            what: "attention k",
            expected: 128,
            found: 256
        })
    ));
    assert!(matches!(
        topkit::Model::new(cfg, &views[..1], None),
        Err(Error::ShapeMismatch {
            what: "layers",
            expected: 2,
            found: 1
        })
    ));
    let mut bad = m.layer_views();
    bad[0].ffn.gate = None;
    assert!(matches!(
        topkit::Model::new(cfg, &bad, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut bad = m.layer_views();
    bad[0].ffn_norm.gain = &m.layers[0].ffn_norm.gain[..15];
    assert!(matches!(
        topkit::Model::new(cfg, &bad, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut bad = m.layer_views();
    bad[0].ffn.act = topkit::Activation::Relu;
    assert!(matches!(
        topkit::Model::new(cfg, &bad, None),
        Err(Error::InvalidConfig(_))
    ));

    // Invalid configurations.
    for bad_cfg in [
        ModelConfig {
            n_kv_heads: 3,
            ..cfg
        },
        ModelConfig { d_model: 0, ..cfg },
        ModelConfig { head_dim: 5, ..cfg },
        ModelConfig {
            norm_eps: 0.0,
            ..cfg
        },
    ] {
        assert!(
            matches!(try_plan(&bad_cfg, &run), Err(Error::InvalidConfig(_))),
            "{bad_cfg:?}"
        );
        assert!(matches!(
            topkit::Model::new(bad_cfg, &views, None),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        topkit::Model::new(
            ModelConfig {
                rope_theta: 0.5,
                ..cfg
            },
            &views,
            None
        ),
        Err(Error::InvalidConfig(_))
    ));
    for bad_run in [
        RunConfig { chunk: 0, ..run },
        RunConfig { seq_len: 0, ..run },
        RunConfig {
            k_ff: Some(33),
            ..run
        },
        RunConfig {
            k_attn: Some(0),
            ..run
        },
    ] {
        assert!(
            matches!(try_plan(&cfg, &bad_run), Err(Error::InvalidConfig(_))),
            "{bad_run:?}"
        );
        let mut arena = Arena::new(aligned(&mut buf, p.peak_bytes)).unwrap();
        assert!(matches!(
            forward(&model, &bad_run, &x[..32], None, &mut arena),
            Err(Error::InvalidConfig(_))
        ));
    }
}

#[test]
fn high_water_counts_from_the_arena_start() {
    // A caller may take its own buffers first; the forward pass then needs peak_bytes more.
    let cfg = llama_encoder(16, 4, 2, 32, 2, 64);
    let m = OwnedModel::random(cfg, Dt::F32, 21);
    let views = m.layer_views();
    let model = m.model(&views);
    let run = RunConfig {
        seq_len: 10,
        chunk: 4,
        k_attn: Some(3),
        k_ff: Some(7),
    };
    let p = plan(&cfg, &run);
    let x = input(&mut Rng::new(5), 10, 16);
    let mut buf = Vec::new();
    let mut arena = Arena::new(aligned(&mut buf, 48 + p.peak_bytes)).unwrap();
    let _mine: &mut [u32] = arena.take(9).unwrap(); // 36 bytes, padded to 48
    let out = forward(&model, &run, &x, None, &mut arena)
        .unwrap()
        .to_vec();
    assert_eq!(arena.high_water(), 48 + p.peak_bytes);
    // Same result as in an arena of its own.
    let (alone, _) = run_in(&m, &run, &x, None, p.peak_bytes).unwrap();
    assert_eq!(out, alone);
    // Memory that does not start on a 16-byte boundary is refused.
    let bytes = aligned(&mut buf, 64);
    assert!(matches!(
        Arena::new(&mut bytes[1..]),
        Err(Error::ArenaMisaligned)
    ));
}

/// Bytes of the int8 activations of a product of `n` tokens of `cols` columns, spelled out
/// from the docs of `topkit::kernels::q8_scratch_bytes` (groups of 16 token slots).
fn q8_doc(cols: usize, n: usize) -> usize {
    if n == 0 || cols > 4096 {
        return 0;
    }
    let nb = cols.div_ceil(64);
    let fit = (4096 / cols).min(128 / nb).clamp(1, 16);
    let groups = n.div_ceil(16).min(fit);
    groups * (16 * cols + 64 * nb)
}

/// The fast rows `(kv_fast, attn_fast, ffn_fast, ffn_tokens)` from the formulas of the docs
/// of `topkit::plan`, `topkit::attention::fast_scratch_bytes` and
/// `topkit::ffn::fast_scratch_bytes` (not from the functions).
fn fast_rows_doc(cfg: &ModelConfig, run: &RunConfig) -> (usize, usize, usize, usize) {
    let (n, c, d, hd) = (
        run.seq_len,
        run.chunk.min(run.seq_len),
        cfg.d_model,
        cfg.head_dim,
    );
    let pre = cfg.arch == Arch::Llama;
    let kv_fast = if cfg.causal {
        0
    } else {
        q8_doc(d, if pre { c } else { n })
    };
    let attn = if hd > 128 {
        0
    } else {
        let kb = (n.div_ceil(16) * 16).clamp(16, 256);
        64 * hd
            + match run.k_attn {
                None => 64 * hd + 1024,
                Some(k) if k <= 32 => 64 * kb + padded(2 * kb) + 16 * (k + kb + 16),
                Some(_) => 1024,
            }
    };
    let attn_fast = attn.max(q8_doc(d, c));
    let wide = !cfg.causal && !pre && run.k_ff.is_none() && cfg.kv_dim() >= d;
    let t = if wide { n } else { c };
    let (g, u) = (t.min(16), cfg.d_ff.min(256));
    let gates = 1 + usize::from(cfg.ffn == FfnKind::Gated);
    let ffn_fast = q8_doc(d, t) + gates * padded(4 * g * u) + padded(64 * g) + padded(4 * g);
    (kv_fast, attn_fast, ffn_fast, t)
}

/// A fast plan is the reference plan plus one buffer at the end of each phase, sized by the
/// documented formulas; a reference plan has none of those bytes.
#[test]
fn fast_rows_follow_the_formulas() {
    let cfgs = [
        minilm(512),
        smollm2(),
        config(Arch::Llama, 64, 8, 2, 160, 3, 512),
        llama_encoder(64, 8, 2, 160, 3, 512),
        config(Arch::Bert, 64, 4, 4, 128, 2, 512),
        // Heads wider than the fast attention takes: its block buffers are not planned.
        config(Arch::Bert, 512, 2, 2, 256, 1, 512),
        // Rows wider than the int8 activations take (Q8_MAX_COLS).
        config(Arch::Bert, 8192, 64, 64, 64, 1, 64),
    ];
    for cfg in cfgs {
        for (seq, chunk, k_attn, k_ff) in [
            (32, 8, Some(8), None),
            (256, 16, Some(32), None),
            (512, 16, None, None),
            (40, 5, Some(300), Some(40)),
            (1, 1, Some(1), None),
            (300, 16, Some(16), Some(8)),
        ] {
            let run = RunConfig {
                seq_len: seq.min(cfg.max_seq),
                chunk,
                k_attn,
                k_ff,
            };
            let (r, f) = (
                try_plan(&cfg, &run).unwrap(),
                try_plan_with(&cfg, &run, Kernels::Fast).unwrap(),
            );
            assert_eq!(r, try_plan_with(&cfg, &run, Kernels::Reference).unwrap());
            let (kv, attn, ffn, tokens) = fast_rows_doc(&cfg, &run);
            assert_eq!(
                (
                    f.kv_fast_bytes,
                    f.attn_fast_bytes,
                    f.ffn_fast_bytes,
                    f.ffn_tokens
                ),
                (kv, attn, ffn, tokens),
                "{cfg:?} {run:?}"
            );
            assert_eq!(
                (r.kv_fast_bytes, r.attn_fast_bytes, r.ffn_fast_bytes),
                (0, 0, 0)
            );
            assert_eq!(r.ffn_tokens, r.chunk);
            // Row by row: the fast rows come last in their phases, every other row is the
            // reference one at the same offset.
            for (rb, fb) in r.buffers().iter().zip(f.buffers()) {
                assert_eq!((rb.name, rb.phase), (fb.name, fb.phase));
                if fb.name.ends_with("_fast") {
                    assert_eq!(rb.bytes, 0);
                } else {
                    assert_eq!((rb.bytes, rb.offset), (fb.bytes, fb.offset), "{}", fb.name);
                }
            }
            assert_eq!(f.kv_phase_bytes, r.kv_phase_bytes + kv);
            assert_eq!(f.attn_phase_bytes, r.attn_phase_bytes + attn);
            assert_eq!(f.ffn_phase_bytes, r.ffn_phase_bytes + ffn);
            let ends = f.buffers().map(|b| b.offset + b.bytes);
            assert_eq!(ends.into_iter().max(), Some(f.peak_bytes));
        }
    }
}

/// A fast run given the arena of its reference plan fails with a typed error, the encoder and
/// the decoder alike, and runs in the fast plan's arena.
#[test]
fn fast_runs_need_the_fast_plan() {
    let run = RunConfig {
        k_attn: Some(4),
        ..RunConfig::dense(20, 8)
    };
    let cfg = config(Arch::Bert, 32, 2, 2, 64, 2, 64);
    let m = OwnedModel::random(cfg, Dt::I8, 31);
    let x = input(&mut Rng::new(2), 20, 32);
    let (r, f) = (plan(&cfg, &run), plan_with(&cfg, &run, Kernels::Fast));
    assert!(f.peak_bytes > r.peak_bytes);
    let err = run_in_with(Kernels::Fast, &m, &run, &x, None, r.peak_bytes);
    assert!(matches!(err, Err(Error::ArenaTooSmall { .. })), "{err:?}");
    let (_, hw) = run_in_with(Kernels::Fast, &m, &run, &x, None, f.peak_bytes).unwrap();
    assert_eq!(hw, f.peak_bytes);

    let causal = ModelConfig {
        causal: true,
        ..config(Arch::Llama, 32, 4, 2, 64, 2, 64)
    };
    let lm = OwnedLm::random(causal, Dt::I8, 32);
    let ids: Vec<u32> = (0..20).collect();
    let (r, f) = (plan(&causal, &run), plan_with(&causal, &run, Kernels::Fast));
    assert!(f.peak_bytes > r.peak_bytes);
    let err = decode_in(Kernels::Fast, &lm, &run, &[&ids], r.peak_bytes);
    assert!(matches!(err, Err(Error::ArenaTooSmall { .. })), "{err:?}");
    let (_, hw) = decode_in(Kernels::Fast, &lm, &run, &[&ids], f.peak_bytes).unwrap();
    assert_eq!(hw, f.peak_bytes);
}

/// The fast kernels' answer does not depend on the sizes the plan gives their buffers: the
/// same tokens run for `seq_len` = their number and for a longer context (more token groups
/// per pass, larger key blocks) give the same bits.
#[test]
fn fast_answer_does_not_depend_on_the_planned_sizes() {
    let mut rng = Rng::new(17);
    for (arch, kvh, dt) in [
        (Arch::Bert, 4, Dt::I8),
        (Arch::Bert, 4, Dt::F32),
        (Arch::Llama, 2, Dt::I8),
    ] {
        let cfg = ModelConfig {
            causal: false,
            ..config(arch, 32, 4, kvh, 64, 2, 512)
        };
        let m = OwnedModel::random(cfg, dt, 40);
        let n = 37;
        let x = input(&mut rng, n, 32);
        for k_attn in [None, Some(5), Some(40)] {
            let outs = [n, 100, 512].map(|seq| {
                let run = RunConfig {
                    k_attn,
                    ..RunConfig::dense(seq, 16)
                };
                let bytes = plan_with(&cfg, &run, Kernels::Fast).peak_bytes;
                bits(
                    &run_in_with(Kernels::Fast, &m, &run, &x, None, bytes)
                        .unwrap()
                        .0,
                )
            });
            assert_eq!(outs[0], outs[1], "{arch:?} {dt:?} {k_attn:?}");
            assert_eq!(outs[0], outs[2], "{arch:?} {dt:?} {k_attn:?}");
        }
    }
    let causal = ModelConfig {
        causal: true,
        ..config(Arch::Llama, 32, 4, 2, 64, 2, 512)
    };
    let lm = OwnedLm::random(causal, Dt::I8, 41);
    let ids: Vec<u32> = (0..30).map(|i| (i * 7 % 40) as u32).collect();
    for k_attn in [None, Some(5), Some(40)] {
        // A prefill of 20 tokens, then one token per step.
        let pieces: Vec<&[u32]> = std::iter::once(&ids[..20])
            .chain(ids[20..].chunks(1))
            .collect();
        let logits = [30, 300].map(|seq| {
            let run = RunConfig {
                k_attn,
                ..RunConfig::dense(seq, 8)
            };
            let bytes = plan_with(&causal, &run, Kernels::Fast).peak_bytes;
            bits(
                &decode_in(Kernels::Fast, &lm, &run, &pieces, bytes)
                    .unwrap()
                    .0,
            )
        });
        assert_eq!(logits[0], logits[1], "decoder {k_attn:?}");
    }
}
