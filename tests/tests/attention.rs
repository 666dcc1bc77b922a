//! Attention, dense and top-k, against the naive f64 reference and against each other.
//!
//! Tolerances (absolute, on outputs whose value rows lie in [-1, 1]):
//! - std build: [`TOL`] = 1e-6 (f32 rounding of a few dozen terms; largest seen 1.8e-7 over
//!   4000 cases of each test);
//! - micromath build: [`TOL`] = 5e-3: `math::exp` has a relative error up to 2.4e-3, which
//!   moves each softmax weight (numerator and normaliser) and so the output by up to about
//!   2 * 2.4e-3 * max|v|; largest seen 9.3e-4 over 4000 cases.
//!
//! Top-k against the reference uses queries and keys that are multiples of 1/4: their scores
//! are exact in f32, so the engine and the reference select the same keys and only the softmax
//! and the sum are compared with a tolerance. Where two engine runs should agree (chunk size,
//! masked data, causal prefix) the comparison is exact: each query's computation does not
//! depend on the other queries of its chunk nor on masked keys.

use proptest::prelude::*;
use topkit::attention::{
    AttnDims, AttnParams, AttnScratch, Keys, MAX_KEYS, attention, attention_with,
    fast_scratch_bytes, scratch_bytes,
};
use topkit::kernels::Kernels;
use topkit::{Arena, ArenaStorage, Error};
use topkit_tests::attention_ref::{RefAttn, Rng, attention_ref, max_abs_diff};

#[cfg(feature = "std")]
const TOL: f64 = 1e-6;
#[cfg(not(feature = "std"))]
const TOL: f64 = 5e-3;

const ARENA: usize = 1 << 16;

/// Every property below holds for both kernel choices; each test runs its body for each.
const KERNELS: [Kernels; 2] = [Kernels::Reference, Kernels::Fast];

/// [`run_with`] with the reference kernels.
fn run(p: &AttnParams, q: &[f32], q_pos: usize, keys: &Keys<'_>) -> Result<Vec<f32>, Error> {
    run_with(Kernels::Reference, p, q, q_pos, keys)
}

/// Runs one attention call in a fresh arena, checking that the scratch takes exactly
/// `scratch_bytes` (and, for the fast kernels, `fast_scratch_bytes` for the call's keys more).
fn run_with(
    kern: Kernels,
    p: &AttnParams,
    q: &[f32],
    q_pos: usize,
    keys: &Keys<'_>,
) -> Result<Vec<f32>, Error> {
    let mut storage = Box::new(ArenaStorage::<ARENA>::new());
    let mut arena = storage.arena();
    let (mut s, fast) = match kern {
        Kernels::Reference => (AttnScratch::new(&mut arena, p)?, 0),
        Kernels::Fast => (
            AttnScratch::new_fast(&mut arena, p, keys.n)?,
            fast_scratch_bytes(p, keys.n),
        ),
    };
    assert_eq!(
        arena.high_water(),
        scratch_bytes(p) + fast,
        "scratch_bytes differs from what new takes"
    );
    let mut out = vec![f32::NAN; q.len()];
    attention_with(kern, p, q, q_pos, keys, &mut s, &mut out)?;
    Ok(out)
}

/// A random attention case.
#[derive(Debug, Clone)]
struct Case {
    dims: AttnDims,
    n_q: usize,
    n: usize,
    k: usize,
    chunk: usize,
    causal: bool,
    q_pos: usize,
    mask: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    case_in(1..=3, 1..=8, 1..=9, 0..=40, usize::MAX)
}

/// Cases with more keys than one selection block of the fast path (256) and more queries than
/// one block of lanes (16), small heads.
fn long_case() -> impl Strategy<Value = Case> {
    case_in(1..=2, 1..=4, 1..=40, 250..=700, 40)
}

fn case_in(
    kv_heads: core::ops::RangeInclusive<usize>,
    head_dim: core::ops::RangeInclusive<usize>,
    queries: core::ops::RangeInclusive<usize>,
    keys: core::ops::RangeInclusive<usize>,
    max_k: usize,
) -> impl Strategy<Value = Case> {
    (kv_heads, 1usize..=3, head_dim, queries, keys, any::<u64>())
        .prop_flat_map(move |(kvh, group, hd, n_q, n, seed)| {
            (
                Just((kvh, group, hd, n_q, n, seed)),
                1usize..=(n + 3).min(max_k),
                1usize..=n_q + 2,
                any::<bool>(),
                0usize..=n,
                any::<bool>(),
            )
        })
        .prop_map(
            |((kvh, group, hd, n_q, n, seed), k, chunk, causal, q_pos, mask)| Case {
                dims: AttnDims {
                    n_heads: kvh * group,
                    n_kv_heads: kvh,
                    head_dim: hd,
                },
                n_q,
                n,
                k,
                chunk,
                causal,
                q_pos,
                mask,
                seed,
            },
        )
}

/// Inputs of a case: q and k rows from `quarter` when `exact_scores`, else uniform in [-1, 1];
/// v uniform in [-1, 1]; a padding mask that hides about a quarter of the keys.
struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    valid: Option<Vec<bool>>,
}

fn data(c: &Case, exact_scores: bool) -> Data {
    let mut r = Rng::new(c.seed);
    let q_dim = c.dims.n_heads * c.dims.head_dim;
    let kv_dim = c.dims.n_kv_heads * c.dims.head_dim;
    let (q, k) = if exact_scores {
        (r.quarters(c.n_q * q_dim), r.quarters(c.n * kv_dim))
    } else {
        (
            r.vec(c.n_q * q_dim, -1.0, 1.0),
            r.vec(c.n * kv_dim, -1.0, 1.0),
        )
    };
    let v = r.vec(c.n * kv_dim, -1.0, 1.0);
    let valid = c.mask.then(|| (0..c.n).map(|_| !r.chance(0.25)).collect());
    Data { q, k, v, valid }
}

impl Case {
    fn params(&self, k_attn: Option<usize>, chunk: usize) -> AttnParams {
        AttnParams {
            dims: self.dims,
            causal: self.causal,
            k_attn,
            chunk,
        }
    }

    fn reference(&self, k: Option<usize>) -> RefAttn {
        RefAttn {
            n_heads: self.dims.n_heads,
            n_kv_heads: self.dims.n_kv_heads,
            head_dim: self.dims.head_dim,
            causal: self.causal,
            q_pos: self.q_pos,
            k,
        }
    }
}

fn keys<'a>(c: &Case, d: &'a Data) -> Keys<'a> {
    Keys {
        k: &d.k,
        v: &d.v,
        n: c.n,
        valid: d.valid.as_deref(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Top-k equals the naive reference (full row, sort, softmax over the kept set). Tolerance
    /// TOL (see the module doc); the kept sets are identical by construction.
    #[test]
    fn topk_matches_naive_reference(c in case()) {
        check_topk_reference(&c)?;
    }

    /// Dense equals the naive full-softmax reference, within TOL.
    #[test]
    fn dense_matches_naive_reference(c in case()) {
        for kern in KERNELS {
            let d = data(&c, false);
            let out = run_with(kern, &c.params(None, c.chunk), &d.q, c.q_pos, &keys(&c, &d)).unwrap();
            let want = attention_ref(&c.reference(None), &d.q, &d.k, &d.v, c.n, d.valid.as_deref());
            let err = max_abs_diff(&out, &want);
            prop_assert!(err <= TOL, "max error {err} > {TOL}");
        }
    }

    /// With k >= the number of keys, top-k equals dense within TOL (same softmax, computed
    /// in two passes instead of online).
    #[test]
    fn topk_with_all_keys_equals_dense(c in case(), extra in 0usize..4) {
        for kern in KERNELS {
            let d = data(&c, false);
            let k = c.n.max(1) + extra;
            let top = run_with(kern, &c.params(Some(k), c.chunk), &d.q, c.q_pos, &keys(&c, &d)).unwrap();
            let dense = run_with(kern, &c.params(None, c.chunk), &d.q, c.q_pos, &keys(&c, &d)).unwrap();
            let dense: Vec<f64> = dense.iter().map(|&x| x as f64).collect();
            let err = max_abs_diff(&top, &dense);
            prop_assert!(err <= TOL, "max error {err} > {TOL}");
        }
    }

    /// The chunk size C changes nothing, bit for bit, in both modes.
    #[test]
    fn chunk_size_does_not_change_results(c in case(), other in 1usize..12) {
        check_chunk_size(&c, other)?;
    }

    /// Masked keys never take part: giving them the largest scores and huge values changes
    /// nothing, bit for bit. Keys `j > q_pos + n_q - 1` (future for every query) are masked
    /// the same way when causal.
    #[test]
    fn masked_keys_are_never_selected(mut c in case(), dense in any::<bool>()) {
        for kern in KERNELS {
            c.mask = true;
            let d = data(&c, false);
            let k_attn = (!dense).then_some(c.k);
            let p = c.params(k_attn, c.chunk);
            let base = run_with(kern, &p, &d.q, c.q_pos, &keys(&c, &d)).unwrap();
            let mut bad = Data { q: d.q.clone(), k: d.k.clone(), v: d.v.clone(), valid: d.valid.clone() };
            let kv_dim = c.dims.n_kv_heads * c.dims.head_dim;
            let last = c.q_pos + c.n_q - 1;
            let valid = d.valid.as_deref().unwrap();
            for (j, &ok) in valid.iter().enumerate() {
                if !ok || (c.causal && j > last) {
                    for x in &mut bad.k[j * kv_dim..(j + 1) * kv_dim] {
                        // Huge scores of either sign: a leak would dominate or shift the softmax.
                        *x = if j % 2 == 0 { 1e4 } else { -1e4 };
                    }
                    for x in &mut bad.v[j * kv_dim..(j + 1) * kv_dim] {
                        *x = 1e6;
                    }
                }
            }
            let got = run_with(kern, &p, &d.q, c.q_pos, &keys(&c, &bad)).unwrap();
            prop_assert_eq!(base, got);
        }
    }

    /// Causal attention of query i equals non-causal attention over keys 0..=q_pos+i, bit for
    /// bit.
    #[test]
    fn causal_equals_prefix(c in case(), dense in any::<bool>()) {
        check_causal_prefix(c, dense)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// [`topk_matches_naive_reference`] with several blocks of keys (k up to 40: both fast
    /// top-k paths).
    #[test]
    fn long_topk_matches_naive_reference(c in long_case()) {
        check_topk_reference(&c)?;
    }

    /// [`chunk_size_does_not_change_results`] with several blocks of keys.
    #[test]
    fn long_chunk_size_does_not_change_results(c in long_case(), other in 1usize..20) {
        check_chunk_size(&c, other)?;
    }

    /// [`causal_equals_prefix`] with several blocks of keys.
    #[test]
    fn long_causal_equals_prefix(c in long_case(), dense in any::<bool>()) {
        check_causal_prefix(c, dense)?;
    }
}

fn check_topk_reference(c: &Case) -> Result<(), TestCaseError> {
    for kern in KERNELS {
        let d = data(c, true);
        let out = run_with(
            kern,
            &c.params(Some(c.k), c.chunk),
            &d.q,
            c.q_pos,
            &keys(c, &d),
        )
        .unwrap();
        let want = attention_ref(
            &c.reference(Some(c.k)),
            &d.q,
            &d.k,
            &d.v,
            c.n,
            d.valid.as_deref(),
        );
        let err = max_abs_diff(&out, &want);
        prop_assert!(err <= TOL, "{kern:?}: max error {err} > {TOL}");
    }
    Ok(())
}

fn check_causal_prefix(mut c: Case, dense: bool) -> Result<(), TestCaseError> {
    for kern in KERNELS {
        c.causal = true;
        let d = data(&c, false);
        let k_attn = (!dense).then_some(c.k);
        let out = run_with(
            kern,
            &c.params(k_attn, c.chunk),
            &d.q,
            c.q_pos,
            &keys(&c, &d),
        )
        .unwrap();
        let q_dim = c.dims.n_heads * c.dims.head_dim;
        let kv_dim = c.dims.n_kv_heads * c.dims.head_dim;
        for i in 0..c.n_q {
            let m = c.n.min(c.q_pos + i + 1);
            let pre = Keys {
                k: &d.k[..m * kv_dim],
                v: &d.v[..m * kv_dim],
                n: m,
                valid: d.valid.as_deref().map(|v| &v[..m]),
            };
            let mut p = c.params(k_attn, 1);
            p.causal = false;
            let one = run_with(kern, &p, &d.q[i * q_dim..(i + 1) * q_dim], 0, &pre).unwrap();
            prop_assert_eq!(&out[i * q_dim..(i + 1) * q_dim], &one[..]);
        }
    }
    Ok(())
}

fn check_chunk_size(c: &Case, other: usize) -> Result<(), TestCaseError> {
    for kern in KERNELS {
        let d = data(c, false);
        for k in [Some(c.k), None] {
            let a = run_with(kern, &c.params(k, c.chunk), &d.q, c.q_pos, &keys(c, &d)).unwrap();
            let b = run_with(kern, &c.params(k, other), &d.q, c.q_pos, &keys(c, &d)).unwrap();
            prop_assert_eq!(a, b);
        }
    }
    Ok(())
}

/// Equal scores: the lower key indices win. All keys equal, so every score ties; the output is
/// the mean of the first k visible value rows (tolerance TOL; with equal scores every weight is
/// exactly 1/k in both builds, since exp(0) == 1, so only the sum's rounding remains).
#[test]
fn ties_go_to_the_lower_index() {
    for kern in KERNELS {
        let dims = AttnDims {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
        };
        let n = 20;
        let mut r = Rng::new(7);
        let q = r.vec(2 * 8, -1.0, 1.0);
        let k: Vec<f32> = (0..n).flat_map(|_| [0.5, -0.25, 1.0, 0.75]).collect();
        let v = r.vec(n * 4, -1.0, 1.0);
        let valid: Vec<bool> = (0..n).map(|j| j % 3 != 1).collect();
        for kk in [1usize, 3, 5] {
            for chunk in [1, 2] {
                let p = AttnParams {
                    dims,
                    causal: false,
                    k_attn: Some(kk),
                    chunk,
                };
                let keys = Keys {
                    k: &k,
                    v: &v,
                    n,
                    valid: Some(&valid),
                };
                let out = run_with(kern, &p, &q, 0, &keys).unwrap();
                let first: Vec<usize> = (0..n).filter(|&j| valid[j]).take(kk).collect();
                for (o, chunk) in out.chunks(4).enumerate() {
                    for (dd, &x) in chunk.iter().enumerate() {
                        let mean: f64 =
                            first.iter().map(|&j| v[j * 4 + dd] as f64).sum::<f64>() / kk as f64;
                        assert!(
                            (x as f64 - mean).abs() <= TOL,
                            "row {o} dim {dd}: {x} vs {mean}"
                        );
                    }
                }
            }
        }
    }
}

/// A query that sees no key (all padding, or causal with only future keys) gets zeros.
#[test]
fn query_without_visible_keys_gives_zeros() {
    let dims = AttnDims {
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 3,
    };
    let mut r = Rng::new(3);
    let q = r.vec(3 * 6, -1.0, 1.0);
    let k = r.vec(4 * 6, -1.0, 1.0);
    let v = r.vec(4 * 6, -1.0, 1.0);
    let none = [false; 4];
    for k_attn in [Some(2), None] {
        let p = AttnParams {
            dims,
            causal: false,
            k_attn,
            chunk: 2,
        };
        let out = run(
            &p,
            &q,
            0,
            &Keys {
                k: &k,
                v: &v,
                n: 4,
                valid: Some(&none),
            },
        )
        .unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
        let out = run(
            &p,
            &q,
            0,
            &Keys {
                k: &[],
                v: &[],
                n: 0,
                valid: None,
            },
        )
        .unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
    }
}

/// The scratch is exactly the documented formula, and what `new` takes.
#[test]
fn scratch_bytes_formula() {
    let pad = |b: usize| b.div_ceil(16) * 16;
    let dims = AttnDims {
        n_heads: 12,
        n_kv_heads: 4,
        head_dim: 32,
    };
    for c in [1usize, 3, 16, 33] {
        for k in [None, Some(1), Some(7), Some(32)] {
            let p = AttnParams {
                dims,
                causal: false,
                k_attn: k,
                chunk: c,
            };
            let want = match k {
                Some(k) => pad(4 * c * k) + pad(2 * c * k) + pad(4 * c),
                None => pad(8 * c),
            };
            assert_eq!(scratch_bytes(&p), want);
            let mut storage = Box::new(ArenaStorage::<ARENA>::new());
            let mut arena = storage.arena();
            AttnScratch::new(&mut arena, &p).unwrap();
            assert_eq!(arena.high_water(), want);
        }
    }
    // The plan can quote it in a const item.
    const P: AttnParams = AttnParams {
        dims: AttnDims {
            n_heads: 12,
            n_kv_heads: 12,
            head_dim: 32,
        },
        causal: false,
        k_attn: Some(32),
        chunk: 16,
    };
    const B: usize = scratch_bytes(&P);
    assert_eq!(B, 16 * 32 * 6 + 64);
    // Absurd sizes saturate instead of overflowing.
    let huge = AttnParams {
        chunk: usize::MAX,
        ..P
    };
    assert_eq!(scratch_bytes(&huge), usize::MAX);
}

/// Bad inputs are typed errors, never panics.
#[test]
fn bad_inputs_are_errors() {
    let dims = AttnDims {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 2,
    };
    let p = AttnParams {
        dims,
        causal: true,
        k_attn: Some(2),
        chunk: 2,
    };
    let q = [0.5f32; 8];
    let kv = [0.25f32; 6];
    let valid = [true; 3];
    let good = Keys {
        k: &kv,
        v: &kv,
        n: 3,
        valid: Some(&valid),
    };
    let mut storage = Box::new(ArenaStorage::<ARENA>::new());
    let mut arena: Arena<'_> = storage.arena();
    let mut s = AttnScratch::new(&mut arena, &p).unwrap();
    let mut out = [0f32; 8];
    assert!(attention(&p, &q, 0, &good, &mut s, &mut out).is_ok());

    // Each bad input against `good`, with `n_out` outputs: which error it gives.
    let mut run = |p: &AttnParams, q: &[f32], keys: &Keys<'_>, n_out: usize| {
        attention(p, q, 0, keys, &mut s, &mut out[..n_out])
    };
    let shape = |r: Result<(), Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let config = |r: Result<(), Error>| matches!(r, Err(Error::InvalidConfig(_)));
    assert!(shape(run(&p, &q[..7], &good, 7)));
    assert!(shape(run(&p, &q, &good, 6)));
    // `good` with one field changed.
    let mut keys = [good; 4];
    keys[0].k = &kv[..5];
    keys[1].v = &kv[..4];
    keys[2].valid = Some(&valid[..2]);
    keys[3].n = 4;
    for k in &keys {
        assert!(shape(run(&p, &q, k, 8)), "{k:?}");
    }

    let mut bad_dims = p;
    bad_dims.dims.n_heads = 3;
    bad_dims.dims.n_kv_heads = 2;
    assert!(config(run(&bad_dims, &q[..6], &good, 6)));
    // `p` with one field changed; k_attn 3 and chunk 3 are past what the scratch was made for.
    let mut params = [p; 5];
    params[0].chunk = 0;
    params[1].k_attn = Some(0);
    params[2].k_attn = Some(3);
    params[3].chunk = 3;
    params[4].dims.n_heads = 0;
    for p in &params {
        assert!(config(run(p, &q, &good, 8)), "{p:?}");
    }
    // The fast kernels need the fast part of the scratch (AttnScratch::new_fast).
    let fast = attention_with(Kernels::Fast, &p, &q, 0, &good, &mut s, &mut out);
    assert!(config(fast));
    let mut f = AttnScratch::new_fast(&mut arena, &p, 3).unwrap();
    assert!(attention_with(Kernels::Fast, &p, &q, 0, &good, &mut f, &mut out).is_ok());
    assert!(matches!(
        AttnScratch::new(&mut arena, &AttnParams { chunk: 0, ..p }),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        AttnScratch::new(
            &mut arena,
            &AttnParams {
                chunk: 1 << 20,
                k_attn: Some(1 << 12),
                ..p
            }
        ),
        Err(Error::ArenaTooSmall { .. })
    ));

    // More keys than u16 indices can name.
    let n = MAX_KEYS + 1;
    let big = vec![0f32; n];
    let p1 = AttnParams {
        dims: AttnDims {
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 1,
        },
        ..p
    };
    let mut out1 = [0f32; 2];
    let r = attention(
        &p1,
        &[1.0, 1.0],
        0,
        &Keys {
            k: &big,
            v: &big,
            n,
            valid: None,
        },
        &mut s,
        &mut out1,
    );
    assert_eq!(
        r,
        Err(Error::SeqTooLong {
            len: n,
            max: MAX_KEYS
        })
    );
    // The largest key count works, and the last key can be selected.
    let n = MAX_KEYS;
    let mut kk = vec![0f32; n];
    kk[n - 1] = 1.0;
    let mut vv = vec![0f32; n];
    vv[n - 1] = 1.0;
    let p1 = AttnParams {
        k_attn: Some(1),
        causal: false,
        ..p1
    };
    attention(
        &p1,
        &[100.0],
        0,
        &Keys {
            k: &kk,
            v: &vv,
            n,
            valid: None,
        },
        &mut s,
        &mut out1[..1],
    )
    .unwrap();
    assert_eq!(out1[0], 1.0);
}
