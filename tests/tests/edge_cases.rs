//! Arithmetic edge cases of the whole layer stack (both math builds): every key masked,
//! sequences of 0 and 1 tokens, k = 0 and k above the number of keys, non-finite inputs.
//! Attention-level versions of some of these are in attention.rs; here they go through
//! `forward` (norms, residuals, FFN) where a NaN would spread.

use topkit::model::forward;
use topkit::{Arch, Arena, Error, RunConfig, plan, try_plan};
use topkit_tests::attention_ref::max_abs_diff;
use topkit_tests::model_ref::{Dt, OwnedModel, Rng, config};

/// Top-k with k >= keys vs dense in the same build (see tests/plan.rs for the reasoning).
const TOL_SAME: f64 = if cfg!(feature = "std") { 5e-6 } else { 1e-3 };

fn run(
    m: &OwnedModel,
    run: &RunConfig,
    x: &[f32],
    valid: Option<&[bool]>,
) -> Result<Vec<f32>, Error> {
    let views = m.layer_views();
    let model = m.model(&views);
    let p = try_plan(&m.config, run)?;
    let mut mem = vec![0u128; p.peak_bytes.div_ceil(16)];
    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem))?;
    forward(&model, run, x, valid, &mut arena).map(|h| h.to_vec())
}

fn models() -> Vec<OwnedModel> {
    [Arch::Bert, Arch::Llama]
        .into_iter()
        .flat_map(|arch| {
            // `forward` is the whole-sequence (encoder) path: a causal model goes through the
            // decoder (tests/decoder.rs), so the Llama blocks run here as a pre-norm encoder.
            let mut c = config(arch, 8, 2, 1, 16, 2, 16);
            c.causal = false;
            [Dt::F32, Dt::I8].map(|dt| OwnedModel::random(c, dt, 11))
        })
        .collect()
}

/// A padding mask that hides every key: attention contributes zeros, so the result is defined
/// (finite) and each token's output depends on its own input row only.
#[test]
fn all_masked_rows_are_finite_and_independent() {
    let mut rng = Rng::new(1);
    let n = 5;
    for m in models() {
        let d = m.config.d_model;
        let x = rng.vec(n * d, -1.0, 1.0);
        let none = vec![false; n];
        for k_attn in [None, Some(2)] {
            let r = RunConfig {
                k_attn,
                ..RunConfig::dense(8, 2)
            };
            let out = run(&m, &r, &x, Some(&none)).unwrap();
            assert!(out.iter().all(|v| v.is_finite()), "{:?}", m.config.arch);
            // Change every other token: token 0's output must not move, bit for bit.
            let mut y = x.clone();
            y[d..].iter_mut().for_each(|v| *v = -*v * 3.0);
            let out2 = run(&m, &r, &y, Some(&none)).unwrap();
            assert_eq!(out[..d], out2[..d], "{:?} {k_attn:?}", m.config.arch);
            assert_ne!(out[d..], out2[d..]);
        }
    }
}

/// seq_len 0 is refused by the plan; an empty input is a shape error, not a panic.
#[test]
fn zero_tokens_are_errors() {
    for m in models() {
        let zero = RunConfig::dense(0, 1);
        assert_eq!(
            try_plan(&m.config, &zero).err(),
            Some(Error::InvalidConfig("seq_len must be at least 1"))
        );
        let r = RunConfig::dense(4, 2);
        assert!(matches!(
            run(&m, &r, &[], None),
            Err(Error::ShapeMismatch { found: 0, .. })
        ));
        // Not a whole number of rows.
        assert!(matches!(
            run(&m, &r, &[0.5; 3], None),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

/// One token: its only key is itself; top-k with k = 1 and dense agree, and a run sized for
/// one token accepts exactly one.
#[test]
fn one_token() {
    let mut rng = Rng::new(2);
    for m in models() {
        let d = m.config.d_model;
        let x = rng.vec(d, -1.0, 1.0);
        let dense = RunConfig::dense(1, 1);
        let want = run(&m, &dense, &x, None).unwrap();
        assert!(want.iter().all(|v| v.is_finite()));
        let topk = RunConfig {
            k_attn: Some(1),
            ..dense
        };
        let got = run(&m, &topk, &x, None).unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(err <= TOL_SAME, "{:?}: {err}", m.config.arch);
        let two = rng.vec(2 * d, -1.0, 1.0);
        assert_eq!(
            run(&m, &dense, &two, None).err(),
            Some(Error::SeqTooLong { len: 2, max: 1 })
        );
    }
}

/// k = 0 (attention or FFN) is refused; k above the number of keys (or d_ff) is dense.
#[test]
fn k_zero_is_refused_and_k_above_keys_is_dense() {
    let mut rng = Rng::new(3);
    for m in models() {
        let c = m.config;
        let base = RunConfig::dense(8, 3);
        for bad in [
            RunConfig {
                k_attn: Some(0),
                ..base
            },
            RunConfig {
                k_ff: Some(0),
                ..base
            },
        ] {
            assert!(matches!(try_plan(&c, &bad), Err(Error::InvalidConfig(_))));
            let x = rng.vec(2 * c.d_model, -1.0, 1.0);
            assert!(matches!(
                run(&m, &bad, &x, None),
                Err(Error::InvalidConfig(_))
            ));
        }
        // k_ff above d_ff is refused too (there are only d_ff hidden units).
        assert!(
            try_plan(
                &c,
                &RunConfig {
                    k_ff: Some(c.d_ff + 1),
                    ..base
                }
            )
            .is_err()
        );
        let n = 6;
        let x = rng.vec(n * c.d_model, -1.0, 1.0);
        let want = run(&m, &base, &x, None).unwrap();
        for k in [n, n + 1, 1000] {
            let r = RunConfig {
                k_attn: Some(k),
                ..base
            };
            assert!(plan(&c, &r).peak_bytes > 0);
            let got = run(&m, &r, &x, None).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err <= TOL_SAME, "{:?} k {k}: {err}", c.arch);
        }
    }
}

/// Non-finite hidden states (from a caller's embedding, not from a checked file) do not crash
/// the engine; the output is garbage but the call returns.
#[test]
fn non_finite_inputs_do_not_panic() {
    for m in models() {
        let d = m.config.d_model;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX] {
            let mut x = vec![0.25f32; 3 * d];
            x[d + 1] = bad;
            for k_attn in [None, Some(1), Some(2)] {
                let r = RunConfig {
                    k_attn,
                    k_ff: Some(4),
                    ..RunConfig::dense(4, 2)
                };
                assert!(run(&m, &r, &x, None).is_ok());
            }
        }
    }
}
