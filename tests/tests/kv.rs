//! Keys and values stored as f16 or int8 (`KvType`): the stored rows, the attention over them
//! (the same results as f32 attention over the dequantized rows), and the encoder and decoder
//! with every storage type: arena high-water equal to `plan_kv`'s peak, outputs close to the
//! f32 cache's.

use topkit::attention::{
    AttnDims, AttnParams, AttnScratch, Keys, KvKeys, attention_kv, attention_with,
    fast_scratch_bytes, kv_tile_bytes, scratch_bytes,
};
use topkit::kernels::{
    Kernels, KvRows, KvRowsMut, f16, kv_int8_group, kv_int8_scales, kv_store_rows,
};
use topkit::{
    Arch, Arena, Error, KvType, ModelConfig, RunConfig, forward, plan_kv, plan_with, try_plan_kv,
};
use topkit_tests::attention_ref::max_abs_diff;
use topkit_tests::decoder_ref::OwnedLm;
use topkit_tests::model_ref::{Dt, OwnedModel, Rng, config};

const KINDS: [KvType; 3] = [KvType::F32, KvType::F16, KvType::Int8];
const KERNELS: [Kernels; 2] = [Kernels::Reference, Kernels::Fast];

/// Owned storage of `rows` rows of `kv_dim` values in `kv`.
enum Stored {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Int8(Vec<i8>, Vec<f32>),
}

impl Stored {
    fn new(kv: KvType, x: &[f32], hd: usize) -> Self {
        let mut s = match kv {
            KvType::F32 => Stored::F32(vec![0.0; x.len()]),
            KvType::F16 => Stored::F16(vec![f16::ZERO; x.len()]),
            KvType::Int8 => Stored::Int8(vec![0; x.len()], vec![0.0; x.len() / kv_int8_group(hd)]),
        };
        let mut dst = match &mut s {
            Stored::F32(v) => KvRowsMut::F32(v),
            Stored::F16(v) => KvRowsMut::F16(v),
            Stored::Int8(q, s) => KvRowsMut::Int8 { q, scales: s },
        };
        kv_store_rows(x, hd, &mut dst, 0);
        s
    }

    fn rows(&self) -> KvRows<'_> {
        match self {
            Stored::F32(v) => KvRows::F32(v),
            Stored::F16(v) => KvRows::F16(v),
            Stored::Int8(q, s) => KvRows::Int8 { q, scales: s },
        }
    }

    /// The stored values as f32, computed here (not by the kernel under test).
    fn dequantized(&self, hd: usize) -> Vec<f32> {
        match self {
            Stored::F32(v) => v.clone(),
            Stored::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            Stored::Int8(q, s) => q
                .iter()
                .enumerate()
                .map(|(i, &v)| s[i / kv_int8_group(hd)] * v as f32)
                .collect(),
        }
    }
}

/// int8 rows: one scale per group of 32 values (heads of 64: two per head row; heads of 16:
/// one per head row), `max|x| / 127`, and every value within half a step; f16 rows: round to
/// nearest.
#[test]
fn stored_rows_are_the_documented_roundings() {
    assert_eq!((kv_int8_group(64), kv_int8_scales(64)), (32, 2));
    assert_eq!((kv_int8_group(16), kv_int8_scales(16)), (16, 1));
    assert_eq!((kv_int8_group(96), kv_int8_scales(96)), (32, 3));
    let mut rng = Rng::new(5);
    for hd in [16, 64] {
        let g = kv_int8_group(hd);
        let mut x = rng.vec(6 * hd, -3.0, 3.0);
        x[2 * hd..3 * hd].fill(0.0); // an all-zero row: scale 0
        x[4 * hd] = 40.0; // an outlier: only its group's step grows
        let Stored::Int8(q, s) = Stored::new(KvType::Int8, &x, hd) else {
            unreachable!()
        };
        assert_eq!(s.len(), 6 * hd / g);
        for (r, grp) in x.chunks(g).enumerate() {
            let max = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(s[r], max / 127.0, "group {r}");
            for (i, &v) in grp.iter().enumerate() {
                let err = (v - s[r] * q[r * g + i] as f32).abs();
                assert!(err <= s[r] * 0.5 * 1.0001, "group {r} col {i}: {err}");
            }
        }
        assert!(q[2 * hd..3 * hd].iter().all(|&v| v == 0));
        if hd == 64 {
            assert!(s[4 * hd / g + 1] < 3.0 / 127.0 * 1.0001);
        }
    }
    let hd = 16;
    let x = rng.vec(6 * hd, -3.0, 3.0);
    let Stored::F16(h) = Stored::new(KvType::F16, &x, hd) else {
        unreachable!()
    };
    assert!(h.iter().zip(&x).all(|(h, &v)| *h == f16::from_f32(v)));
}

fn scratch_for<'a>(
    arena: &mut Arena<'a>,
    p: &AttnParams,
    n: usize,
    kernels: Kernels,
    tile: bool,
) -> AttnScratch<'a> {
    let mut s = match kernels {
        Kernels::Fast => AttnScratch::new_fast(arena, p, n).unwrap(),
        Kernels::Reference => AttnScratch::new(arena, p).unwrap(),
    };
    if tile {
        s.take_kv_tile(arena, p.dims.head_dim).unwrap();
    }
    s
}

/// Attention over stored keys and values gives the bits of the f32 attention over the
/// dequantized rows, with both kernels, in every mode (dense, top-k with the block selection,
/// top-k with the heap), causal or not, with padding; the fast top-k paths' outputs sum the
/// kept stored rows with the generic kernel, so they match within rounding there.
#[test]
fn stored_attention_is_f32_attention_over_the_dequantized_rows() {
    let mut rng = Rng::new(11);
    for (n_heads, n_kv, hd) in [(4, 2, 16), (3, 1, 64), (2, 2, 8)] {
        let dims = AttnDims {
            n_heads,
            n_kv_heads: n_kv,
            head_dim: hd,
        };
        let (q_dim, kv_dim) = (n_heads * hd, n_kv * hd);
        for (n, n_q, q_pos, causal, valid) in [
            (37, 5, 32, true, false),
            (40, 40, 0, false, true),
            (70, 1, 69, true, false),
        ] {
            let q = rng.vec(n_q * q_dim, -1.0, 1.0);
            let k = rng.vec(n * kv_dim, -2.0, 2.0);
            let v = rng.vec(n * kv_dim, -1.0, 1.0);
            let mask: Vec<bool> = (0..n).map(|j| j % 7 != 3).collect();
            for kv in [KvType::F16, KvType::Int8] {
                let (ks, vs) = (Stored::new(kv, &k, hd), Stored::new(kv, &v, hd));
                let (kd, vd) = (ks.dequantized(hd), vs.dequantized(hd));
                let valid = valid.then_some(mask.as_slice());
                let stored = KvKeys {
                    k: ks.rows(),
                    v: vs.rows(),
                    n,
                    valid,
                };
                let plain = Keys {
                    k: &kd,
                    v: &vd,
                    n,
                    valid,
                };
                for k_attn in [None, Some(4), Some(50)] {
                    let p = AttnParams {
                        dims,
                        causal,
                        k_attn,
                        chunk: 3,
                    };
                    for kernels in KERNELS {
                        let bytes =
                            scratch_bytes(&p) + fast_scratch_bytes(&p, n) + kv_tile_bytes(hd);
                        let mut mem = vec![0u128; bytes / 16 + 1];
                        let mut a = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
                        let mut s = scratch_for(&mut a, &p, n, kernels, true);
                        let mut got = vec![0.0; q.len()];
                        attention_kv(kernels, &p, &q, q_pos, &stored, &mut s, &mut got).unwrap();
                        let mut want = vec![0.0; q.len()];
                        attention_with(kernels, &p, &q, q_pos, &plain, &mut s, &mut want).unwrap();
                        let what = format!("{kv:?} {kernels:?} {k_attn:?} n={n} hd={hd}");
                        // The fast top-k outputs over f32 rows may run an arch softmax kernel
                        // (std builds with AVX-512); over stored rows the generic one.
                        if kernels == Kernels::Fast && k_attn.is_some() {
                            let d = max_abs_diff(&got, &want);
                            assert!(d < 1e-5, "{what}: {d}");
                        } else {
                            assert_eq!(got, want, "{what}");
                        }
                        assert!(got.iter().any(|&x| x != 0.0), "{what}");
                    }
                }
            }
        }
    }
}

/// Stored keys need the tile buffer; int8 scales must be one per head row.
#[test]
fn stored_attention_errors() {
    let dims = AttnDims {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
    };
    let p = AttnParams {
        dims,
        causal: false,
        k_attn: None,
        chunk: 4,
    };
    let x = vec![0.5f32; 4 * 8];
    let st = Stored::new(KvType::Int8, &x, 8);
    let keys = KvKeys {
        k: st.rows(),
        v: st.rows(),
        n: 4,
        valid: None,
    };
    let q = vec![0.25f32; 16];
    let mut out = vec![0.0; 16];
    let mut mem = vec![0u128; 4096];
    let mut a = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
    let mut s = scratch_for(&mut a, &p, 4, Kernels::Reference, false);
    assert!(matches!(
        attention_kv(Kernels::Reference, &p, &q, 0, &keys, &mut s, &mut out),
        Err(Error::InvalidConfig(_))
    ));
    s.take_kv_tile(&mut a, 8).unwrap();
    attention_kv(Kernels::Reference, &p, &q, 0, &keys, &mut s, &mut out).unwrap();
    // Every key equal: the output is the (dequantized) value row, 0.5 within a step.
    assert!(
        out.iter().all(|&o| (o - 0.5).abs() < 0.5 / 127.0),
        "{out:?}"
    );
    let Stored::Int8(qv, sv) = &st else {
        unreachable!()
    };
    let short = KvKeys {
        k: KvRows::Int8 {
            q: qv,
            scales: &sv[..3],
        },
        ..keys
    };
    assert!(matches!(
        attention_kv(Kernels::Reference, &p, &q, 0, &short, &mut s, &mut out),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn smollm2() -> ModelConfig {
    ModelConfig {
        vocab_size: 49152,
        n_layers: 30,
        head_dim: 64,
        d_ff: 1536,
        max_seq: 8192,
        rope_theta: 100000.0,
        ..config(Arch::Llama, 576, 9, 3, 1536, 30, 8192)
    }
}

/// The cache bytes of each type, and int8 at most 1/3.5 of f32 for SmolLM2 (decoder) and
/// MiniLM (encoder keys and values); `plan_kv` with f32 is `plan_with`.
#[test]
fn plan_sizes_the_stored_cache() {
    let minilm = ModelConfig {
        vocab_size: 30522,
        max_seq: 512,
        ..config(Arch::Bert, 384, 12, 12, 1536, 6, 512)
    };
    for (cfg, seq) in [(smollm2(), 2048), (minilm, 256)] {
        let run = RunConfig::dense(seq, 16);
        let rows = if cfg.causal { cfg.n_layers * seq } else { seq };
        for kernels in KERNELS {
            let f = plan_kv(&cfg, &run, kernels, KvType::F32);
            assert_eq!(f, plan_with(&cfg, &run, kernels));
            assert_eq!(f.keys_bytes, 4 * rows * cfg.kv_dim());
            assert_eq!((f.kv_stage_bytes, f.kv_work_bytes), (0, 0));
            let h = plan_kv(&cfg, &run, kernels, KvType::F16);
            assert_eq!(h.keys_bytes, 2 * rows * cfg.kv_dim());
            let i = plan_kv(&cfg, &run, kernels, KvType::Int8);
            let scales = cfg.n_kv_heads * kv_int8_scales(cfg.head_dim);
            assert_eq!(i.keys_bytes, rows * (cfg.kv_dim() + 4 * scales));
            assert_eq!(i.values_bytes, i.keys_bytes);
            assert!(
                3.5 * (i.keys_bytes as f64) <= f.keys_bytes as f64,
                "{cfg:?}"
            );
            assert!(i.peak_bytes < f.peak_bytes);
            let tile = 4 * 32 * cfg.head_dim;
            let stage = 4 * 16 * cfg.kv_dim();
            if cfg.causal {
                assert_eq!((i.kv_stage_bytes, i.kv_work_bytes), (0, tile + stage));
            } else {
                assert_eq!((i.kv_stage_bytes, i.kv_work_bytes), (stage, tile));
            }
            let ends = i.buffers().map(|b| b.offset + b.bytes);
            assert_eq!(ends.into_iter().max(), Some(i.peak_bytes));
        }
    }
    // Overflow is a typed error, not a wrap.
    let big = ModelConfig {
        n_layers: 65536,
        max_seq: 65536,
        ..smollm2()
    };
    let r = try_plan_kv(
        &big,
        &RunConfig::dense(65536, 16),
        Kernels::Fast,
        KvType::Int8,
    );
    if usize::BITS < 64 {
        assert!(matches!(r, Err(Error::InvalidConfig(_))));
    } else {
        assert!(r.is_ok());
    }
}

/// Bars of [`decoder_with_each_cache_type`] (largest logit difference to the f32 cache, f16
/// and int8). Measured: f32 weights 5.6e-4 / 2.1e-2 (both kernels); int8 weights, reference
/// 1.8e-3 / 4.2e-2 (this random model's int8 logits are larger); int8 weights, fast kernels
/// 5.4e-2 / 1.3e-1:
/// there the activations are quantized to int8 before every product, so any change of the
/// attention output, however small, moves some of them by a step, and f16 keys (nearly exact)
/// move the logits about as much as int8 keys.
fn bars(dt: Dt, kernels: Kernels) -> (f64, f64) {
    match (dt, kernels) {
        (Dt::I8, Kernels::Fast) => (0.15, 0.3),
        (Dt::I8, _) => (5e-3, 0.1),
        _ => (2e-3, 3e-2),
    }
}

/// The decoder with every cache type and both kernels: the arena's high-water equals the
/// plan's peak; the logits stay close to the f32 cache's (f16 closer than int8), and the f32
/// cache gives the bits of the default decoder.
#[test]
fn decoder_with_each_cache_type() {
    let cfg = ModelConfig {
        vocab_size: 300,
        ..config(Arch::Llama, 64, 4, 2, 96, 2, 64)
    };
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 300) as u32).collect();
    for (dt, kernels) in [
        (Dt::F32, Kernels::Reference),
        (Dt::F32, Kernels::Fast),
        (Dt::I8, Kernels::Reference),
        (Dt::I8, Kernels::Fast),
    ] {
        let lm = OwnedLm::random(cfg, dt, 3);
        let views = lm.model.layer_views();
        for k_attn in [None, Some(8), Some(40)] {
            let run = RunConfig {
                k_attn,
                ..RunConfig::dense(48, 8)
            };
            let mut logits = Vec::new();
            for kv in KINDS {
                let dec = lm.decoder_with(&views, kernels).with_kv(kv);
                let plan = plan_kv(&cfg, &run, kernels, kv);
                assert_eq!(dec.plan(&run).unwrap(), plan);
                let mut mem = vec![0u128; plan.peak_bytes / 16];
                let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
                let mut s = dec.start(&run, &mut arena).unwrap();
                let mut all = Vec::new();
                // A prefill in chunks, then decode steps.
                s.feed_each(&ids[..30], |_, l| all.extend_from_slice(l))
                    .unwrap();
                for &id in &ids[30..] {
                    all.extend_from_slice(s.feed(&[id]).unwrap());
                }
                assert_eq!(s.high_water(), plan.peak_bytes, "{kv:?} {kernels:?}");
                logits.push(all);
            }
            let default = {
                let dec = lm.decoder_with(&views, kernels);
                let plan = plan_with(&cfg, &run, kernels);
                let mut mem = vec![0u128; plan.peak_bytes / 16];
                let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
                let mut s = dec.start(&run, &mut arena).unwrap();
                let mut all = Vec::new();
                s.feed_each(&ids[..30], |_, l| all.extend_from_slice(l))
                    .unwrap();
                for &id in &ids[30..] {
                    all.extend_from_slice(s.feed(&[id]).unwrap());
                }
                all
            };
            assert_eq!(logits[0], default);
            let (d16, d8) = (
                max_abs_diff(&logits[0], &logits[1]),
                max_abs_diff(&logits[0], &logits[2]),
            );
            let what = format!("{dt:?} {kernels:?} {k_attn:?}: f16 {d16}, int8 {d8}");
            // A small k keeps near-ties of these random scores, which the rounding may swap
            // (a step in the output): only dense and k >= the context are held to the bars.
            if k_attn.is_none_or(|k| k >= ids.len()) {
                let (b16, b8) = bars(dt, kernels);
                assert!(d16 > 0.0 && d16 < b16, "{what}");
                assert!(d8 > d16 && d8 < b8, "{what}");
            } else {
                assert!(logits[2].iter().all(|x| x.is_finite()), "{what}");
            }
        }
    }
}

/// The encoder (post-norm BERT and a pre-norm bidirectional model) with every key type: the
/// high-water equals the plan's peak, the output is close to the f32 keys' one, and the f32
/// keys give the bits of the default model.
#[test]
fn encoder_with_each_key_type() {
    let llama_enc = ModelConfig {
        causal: false,
        ..config(Arch::Llama, 32, 4, 2, 64, 2, 64)
    };
    for cfg in [config(Arch::Bert, 64, 4, 4, 128, 2, 64), llama_enc] {
        let m = OwnedModel::random(cfg, Dt::F32, 17);
        let views = m.layer_views();
        let mut rng = Rng::new(4);
        let n = 37;
        let x = rng.vec(n * cfg.d_model, -1.0, 1.0);
        let valid: Vec<bool> = (0..n).map(|j| j != 5).collect();
        for kernels in KERNELS {
            for k_attn in [None, Some(6), Some(40)] {
                let run = RunConfig {
                    k_attn,
                    ..RunConfig::dense(48, 16)
                };
                let mut outs = Vec::new();
                for kv in KINDS {
                    let model = m.model(&views).with_kernels(kernels).with_kv(kv);
                    let plan = plan_kv(&cfg, &run, kernels, kv);
                    let mut mem = vec![0u128; plan.peak_bytes / 16];
                    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
                    let out = forward(&model, &run, &x, Some(&valid), &mut arena)
                        .unwrap()
                        .to_vec();
                    assert_eq!(arena.high_water(), plan.peak_bytes, "{kv:?} {kernels:?}");
                    outs.push(out);
                }
                let default = {
                    let model = m.model(&views).with_kernels(kernels);
                    let plan = plan_with(&cfg, &run, kernels);
                    let mut mem = vec![0u128; plan.peak_bytes / 16];
                    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
                    forward(&model, &run, &x, Some(&valid), &mut arena)
                        .unwrap()
                        .to_vec()
                };
                assert_eq!(outs[0], default);
                let (d16, d8) = (
                    max_abs_diff(&outs[0], &outs[1]),
                    max_abs_diff(&outs[0], &outs[2]),
                );
                let what = format!(
                    "{:?} {kernels:?} {k_attn:?}: f16 {d16}, int8 {d8}",
                    cfg.arch
                );
                // As in the decoder test: a small k may swap near-ties.
                if k_attn.is_none_or(|k| k >= n) {
                    assert!(d16 > 0.0 && d16 < 5e-3, "{what}");
                    assert!(d8 > d16 && d8 < 5e-2, "{what}");
                } else {
                    assert!(outs[2].iter().all(|x| x.is_finite()), "{what}");
                }
            }
        }
    }
}
