//! The memory plan against the engines: measured high-water == plan (the full-sequence
//! encoder, and the decoder's prefill and decode steps), linear growth in N of both layouts,
//! the layer stack against a naive f64 reference, and the error cases.

use topkit::arena::padded;
use topkit::model::forward;
use topkit::{Arch, Arena, Error, ModelConfig, RunConfig, plan, try_plan};
use topkit_tests::decoder_ref::OwnedLm;
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
    let views = m.layer_views();
    let model = m.model(&views);
    let mut buf = Vec::new();
    let mut arena = Arena::new(aligned(&mut buf, bytes))?;
    let out = forward(&model, run, x, valid, &mut arena)?.to_vec();
    Ok((out, arena.high_water()))
}

fn max_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

/// Runs a decoder session in an arena of exactly `bytes` bytes: feeds `ids` in the given
/// pieces (a prefill, then decode steps); returns the last logits and the high-water mark.
fn decode_in(
    lm: &OwnedLm,
    run: &RunConfig,
    pieces: &[&[u32]],
    bytes: usize,
) -> Result<(Vec<f32>, usize), Error> {
    let views = lm.model.layer_views();
    let dec = lm.decoder(&views);
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
    // (arch, causal, d_model, n_heads, n_kv_heads)
    let shapes = [
        (Arch::Bert, false, 16, 4, 4),
        (Arch::Bert, false, 24, 2, 2),
        (Arch::Llama, false, 16, 4, 2),
        (Arch::Llama, true, 16, 4, 2),
        (Arch::Llama, true, 16, 4, 1),
        (Arch::Llama, true, 12, 3, 3),
    ];
    let runs = [(1, 4), (7, 3), (16, 16), (20, 8), (33, 5)];
    let mut rng = Rng::new(7);
    let (mut cases, mut decoder_cases) = (0, 0);
    for (si, &(arch, causal, d, h, kvh)) in shapes.iter().enumerate() {
        let cfg = ModelConfig {
            causal,
            ..config(arch, d, h, kvh, 32, 2, 64)
        };
        // f16 and int8 weights on one shape of each engine; f32 elsewhere.
        let dt = match si {
            1 | 3 => Dt::F16,
            2 | 4 => Dt::I8,
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
                    let p = plan(&cfg, &run);
                    assert_eq!(p.decoder, causal);
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
                            let (logits, hw) = decode_in(lm, &run, &pieces, p.peak_bytes)
                                .unwrap_or_else(|e| panic!("{cfg:?} {run:?}: {e}"));
                            assert_eq!(hw, p.peak_bytes, "decoder d={d} h={h}/{kvh} {run:?}");
                            assert_eq!(logits.len(), cfg.vocab_size);
                            assert!(logits.iter().all(|v| v.is_finite()));
                            let err = decode_in(lm, &run, &pieces, p.peak_bytes - 16);
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
                        let (out, hw) = run_in(&m, &run, &x, Some(&valid), p.peak_bytes)
                            .unwrap_or_else(|e| panic!("{cfg:?} {run:?}: {e}"));
                        assert_eq!(hw, p.peak_bytes, "{arch:?} d={d} h={h}/{kvh} {run:?}");
                        assert!(out.iter().all(|v| v.is_finite()));
                        let err = run_in(&m, &run, &x, Some(&valid), p.peak_bytes - 16);
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
    assert_eq!(cases, 3 * 5 * 3 * 2 * 2);
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
    let minilm = config(Arch::Bert, 384, 12, 12, 1536, 6, 8192);
    let smollm2 = ModelConfig {
        vocab_size: 49152,
        ..config(Arch::Llama, 576, 9, 3, 1536, 30, 8192)
    };
    let cfgs = [
        minilm,
        config(Arch::Llama, 64, 8, 2, 160, 3, 8192),
        llama_encoder(64, 8, 2, 160, 3, 8192),
        config(Arch::Bert, 32, 4, 4, 64, 1, 8192),
        smollm2,
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
        seq_len: 2048,
        chunk: 16,
        k_attn: Some(32),
        k_ff: None,
    };
    assert_eq!(linear(&smollm2, &run), (46080, 310336));
    assert_eq!(plan(&smollm2, &run).peak_bytes, 94682176);
}

#[test]
fn chunk_is_capped_at_seq_len() {
    let cfg = config(Arch::Llama, 16, 4, 2, 32, 1, 64);
    let a = plan(
        &cfg,
        &RunConfig {
            seq_len: 5,
            chunk: 5,
            k_attn: Some(4),
            k_ff: None,
        },
    );
    let b = plan(
        &cfg,
        &RunConfig {
            seq_len: 5,
            chunk: 64,
            k_attn: Some(4),
            k_ff: None,
        },
    );
    assert_eq!(b.chunk, 5);
    assert_eq!(a.peak_bytes, b.peak_bytes);
}

/// The closing note's table: MiniLM-like (6 layers, 384 wide, 12 heads, d_ff 1536), top-k
/// k = 32, C = 16. Run with `--nocapture` to print it.
#[test]
fn minilm_table() {
    let cfg = config(Arch::Bert, 384, 12, 12, 1536, 6, 4096);
    let cfg = ModelConfig {
        vocab_size: 30522,
        ..cfg
    };
    let a = 4 * (cfg.d_model + 2 * cfg.kv_dim());
    let b = phase_max(
        &cfg,
        &RunConfig {
            seq_len: 16,
            chunk: 16,
            k_attn: Some(32),
            k_ff: None,
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
                seq_len: n,
                chunk: 16,
                k_attn: Some(32),
                k_ff: None,
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
            seq_len: 256,
            chunk: 16,
            k_attn: Some(32),
            k_ff: None,
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
            let err = max_err(&got, &want);
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
        assert!(max_err(&got, &m.reference(&x, None)) < TOL_REF);
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
