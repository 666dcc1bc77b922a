//! The block kernels of the fast attention path (`topkit::kernels::attention`).
//!
//! - `exp_poly` against f64 `exp` over a dense grid: max relative error 2e-7 on
//!   `[EXP_POLY_MIN, EXP_POLY_MAX]` (measured 1.2e-7; printed by the test), exact at 0, 0
//!   below the range, NaN for NaN.
//! - The generic kernels against naive f64 formulas (scores, dense tile, softmax rows) and a
//!   naive sort (block selection, over several blocks, with ties, NaN and infinities), with
//!   the tolerances stated at each test; lane-major scores are the tile transposed, bit for bit.
//! - Arch kernels against the generic ones: the checks of `topkit_tests::kernel_checks` (one
//!   per op, shared with the wasm simd128 tests) over proptest cases, for every arch module
//!   this build has (x86-64 AVX-512 in std builds): the candidate masks and the selected
//!   slots must be identical; float results within the stated tolerance (FMA and the vector
//!   `exp`).

// The arch kernels' case strategies are used only in builds that have an arch module.
#![cfg_attr(not(all(feature = "std", target_arch = "x86_64")), allow(dead_code))]

use proptest::collection::vec;
use proptest::prelude::*;
use topkit::kernels::attention::{
    self as attn, ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState,
};
use topkit::kernels::{
    AttnScoresArgs, AttnTile, EXP_POLY_MAX, EXP_POLY_MIN, exp_poly, exp_poly_slice,
};
use topkit_tests::kernel_checks::{
    self as check, AttnKeys, DenseCase, DenseTile, KeyBlock, SlotsCase, better, exp_rel_error,
};

#[test]
fn exp_poly_accuracy() {
    let err = exp_rel_error(exp_poly_slice, EXP_POLY_MIN, EXP_POLY_MAX, 2_000_001);
    // The softmax range, more densely.
    let err_soft = exp_rel_error(exp_poly_slice, -30.0, 0.0, 2_000_001);
    eprintln!("exp_poly max relative error: {err:.3e} (softmax range [-30, 0]: {err_soft:.3e})");
    assert!(err <= 2e-7 && err_soft <= 2e-7, "{err} {err_soft}");
    assert_eq!(exp_poly(0.0), 1.0);
    assert_eq!(exp_poly(EXP_POLY_MIN - 0.01), 0.0);
    assert_eq!(exp_poly(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_poly(f32::INFINITY), f32::INFINITY);
    assert!(exp_poly(f32::NAN).is_nan());
}

/// A random block: `hd`, transposed queries for `lanes` lanes, `nk` key rows and value rows
/// with row stride `stride >= hd`.
#[derive(Debug, Clone)]
struct Block {
    hd: usize,
    lanes: usize,
    nk: usize,
    stride: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    vis: Vec<u16>,
}

fn block() -> impl Strategy<Value = Block> {
    (1usize..=40, 1usize..=16, 1usize..=16, 0usize..=5).prop_flat_map(|(hd, lanes, nk, pad)| {
        let stride = hd + pad;
        (
            vec(-1.0f32..1.0, lanes * hd),
            vec(-1.0f32..1.0, nk * stride),
            vec(-1.0f32..1.0, nk * stride),
            vec(any::<u16>(), nk),
        )
            .prop_map(move |(q, k, v, vis)| Block {
                hd,
                lanes,
                nk,
                stride,
                q,
                k,
                v,
                vis,
            })
    })
}

impl Block {
    fn qt(&self) -> Vec<f32> {
        let mut qt = vec![0f32; self.hd * ATTN_LANES];
        attn::attn_transpose_queries(&self.q, self.hd, self.lanes, self.hd, &mut qt);
        qt
    }

    fn vis(&self) -> [u16; ATTN_TILE] {
        let lanes = if self.lanes == 16 {
            u16::MAX
        } else {
            (1 << self.lanes) - 1
        };
        core::array::from_fn(|j| self.vis.get(j).map_or(0, |&m| m & lanes))
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// The block as the kernel checks take it.
    fn keys(&self) -> AttnKeys {
        AttnKeys {
            hd: self.hd,
            nk: self.nk,
            stride: self.stride,
            qt: self.qt(),
            k: self.k.clone(),
            v: self.v.clone(),
            vis: self.vis(),
            scale: self.scale(),
        }
    }
}

/// A score for the selection tests: small integers (ties), continuous values, a wide range,
/// and the special values.
fn score() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => (-4i8..=4).prop_map(|v| v as f32),
        6 => -3.0f32..3.0,
        2 => -1e30f32..1e30,
        1 => Just(f32::NAN),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::INFINITY),
        1 => Just(-0.0f32),
        1 => Just(0.0f32),
    ]
}

fn key_block() -> impl Strategy<Value = KeyBlock> {
    let scores = prop_oneof![
        // One kind of score for the whole block: continuous values need several rounds of
        // narrowing, equal ones none.
        2 => vec(-3.0f32..3.0, ATTN_KEY_BLOCK),
        1 => vec((-2i8..=2).prop_map(|v| v as f32), ATTN_KEY_BLOCK),
        1 => vec(Just(0.5f32), ATTN_KEY_BLOCK),
        3 => vec(score(), ATTN_KEY_BLOCK),
    ];
    (
        1usize..=ATTN_KEY_BLOCK / ATTN_TILE,
        scores,
        vec(
            prop_oneof![3 => Just(u16::MAX), 1 => any::<u16>()],
            ATTN_KEY_BLOCK / ATTN_TILE,
        ),
    )
        .prop_map(|(nt, row, vis)| KeyBlock {
            row: row[..nt * ATTN_TILE].to_vec(),
            vis: vis[..nt].to_vec(),
        })
}

proptest! {
    /// Generic scores: within `(hd + 2) * EPS * sum_d |q_d k_d| * scale` of the f64 formula.
    #[test]
    fn generic_scores_match_f64(b in block()) {
        let mut s = [0f32; ATTN_BLOCK];
        attn::attn_scores_tile(&AttnScoresArgs {
            qt: &b.qt(),
            hd: b.hd,
            k: &b.k,
            stride: b.stride,
            nk: b.nk,
            scale: b.scale(),
        }, &mut s);
        for j in 0..b.nk {
            for l in 0..b.lanes {
                let (mut want, mut mag) = (0f64, 0f64);
                for d in 0..b.hd {
                    let p = b.q[l * b.hd + d] as f64 * b.k[j * b.stride + d] as f64;
                    want += p;
                    mag += p.abs();
                }
                let sc = b.scale() as f64;
                let tol = (b.hd as f64 + 2.0) * f32::EPSILON as f64 * mag * sc + 1e-30;
                let got = s[j * ATTN_LANES + l] as f64;
                prop_assert!((got - want * sc).abs() <= tol, "{} vs {}", got, want * sc);
            }
        }
    }

    /// Generic dense tile, run over two tiles (the second with shifted scores, so that some
    /// lanes rescale): each lane's normalised output within 1e-6 of the f64 softmax over the
    /// keys it sees (values in [-1, 1]).
    #[test]
    fn generic_dense_tile_matches_f64(b in block(), shift in -3.0f32..3.0) {
        let hd = b.hd;
        let mut acc = vec![0f32; ATTN_LANES * hd];
        let mut st = AttnDenseState::new(&mut acc);
        let mut tiles = Vec::new();
        for t in 0..2 {
            let mut s = [0f32; ATTN_BLOCK];
            attn::attn_scores_tile(&AttnScoresArgs {
            qt: &b.qt(),
            hd,
            k: &b.k,
            stride: b.stride,
            nk: b.nk,
            scale: b.scale(),
        }, &mut s);
            let vis = b.vis().map(|m| if t == 0 { m } else { m.rotate_left(3) });
            if t == 1 {
                s.iter_mut().for_each(|x| *x += shift);
            }
            let tile = AttnTile {
                s: &s,
                vis: &vis,
                nk: b.nk,
            };
            attn::attn_dense_tile(&tile, &b.v, b.stride, hd, &mut st);
            tiles.push((s, vis));
        }
        for l in 0..b.lanes {
            let mut ws = Vec::new();
            for (s, vis) in &tiles {
                for j in 0..b.nk {
                    if vis[j] >> l & 1 != 0 {
                        ws.push((s[j * ATTN_LANES + l] as f64, &b.v[j * b.stride..][..hd]));
                    }
                }
            }
            if ws.is_empty() {
                prop_assert_eq!(st.sum[l], 0.0);
                continue;
            }
            let m = ws.iter().map(|w| w.0).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = ws.iter().map(|w| (w.0 - m).exp()).sum();
            for d in 0..hd {
                let want: f64 = ws.iter().map(|w| (w.0 - m).exp() * w.1[d] as f64).sum::<f64>() / z;
                let got = st.acc[l * hd + d] as f64 / st.sum[l] as f64;
                prop_assert!((got - want).abs() <= 1e-6, "lane {} dim {}: {} vs {}", l, d, got, want);
            }
        }
    }

    /// Generic lane-major scores: the key-major tile transposed, bit for bit.
    #[test]
    fn generic_scores_rows_are_the_tile_transposed(b in block(), rs in 16usize..20) {
        let qt = b.qt();
        let mut s = [0f32; ATTN_BLOCK];
        let args = AttnScoresArgs {
            qt: &qt,
            hd: b.hd,
            k: &b.k,
            stride: b.stride,
            nk: b.nk,
            scale: b.scale(),
        };
        attn::attn_scores_tile(&args, &mut s);
        let mut rows = vec![f32::NAN; ATTN_LANES * rs];
        attn::attn_scores_rows(&args, &mut rows, rs);
        for l in 0..ATTN_LANES {
            for j in 0..rs {
                let want = if j < b.nk { s[j * ATTN_LANES + l].to_bits() } else { f32::NAN.to_bits() };
                prop_assert_eq!(rows[l * rs + j].to_bits(), want, "lane {} key {}", l, j);
            }
        }
    }

    /// The rank order: a > b for non-NaN scores (-0 ties +0), NaN below everything, and the
    /// inverse on non-NaN scores.
    #[test]
    fn rank_is_the_score_order(a in score(), b in score()) {
        let (ra, rb) = (attn::attn_rank(a), attn::attn_rank(b));
        prop_assert_eq!(ra.cmp(&rb), better(a, b));
        if !a.is_nan() {
            prop_assert_eq!(attn::attn_rank_score(ra).to_bits(), (a + 0.0).to_bits());
            prop_assert!(ra > attn::ATTN_RANK_NAN);
        }
    }

    /// Generic block selection against a sort of every visible key seen so far, over several
    /// blocks: the best k (score descending, NaN last, then the lower key), in key order.
    #[test]
    fn generic_topk_block_matches_a_sort(blocks in vec(key_block(), 1..5), k in 1usize..=32) {
        check::attn_topk_matches_a_sort(&(blocks, k), attn::attn_topk_block);
    }
    /// Generic softmax rows within 1e-6 of the f64 formula (values in [-1, 1]).
    #[test]
    fn generic_softmax_rows_match_f64(
        (hd, n, sc, ix, v) in (1usize..=40, 0usize..=40).prop_flat_map(|(hd, n)| (
            Just(hd), Just(n), vec(-20.0f32..20.0, n), vec(0u16..50, n), vec(-1.0f32..1.0, 50 * hd)))
    ) {
        let mut out = vec![f32::NAN; hd];
        attn::attn_softmax_rows(&sc, &ix, &v, hd, hd, &mut out);
        let m = sc.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = sc.iter().map(|&x| (x as f64 - m).exp()).sum();
        for d in 0..hd {
            let want = if n == 0 { 0.0 } else {
                sc.iter().zip(&ix).map(|(&x, &j)| (x as f64 - m).exp() * v[j as usize * hd + d] as f64).sum::<f64>() / z
            };
            prop_assert!((out[d] as f64 - want).abs() <= 1e-6, "{} vs {}", out[d], want);
        }
    }
}

// ---- Cases of the arch kernel checks (`topkit_tests::kernel_checks`).

/// Two tiles of a block's keys from the empty state: the generic scores, then the same
/// shifted (a new maximum in some lanes) with other lanes seeing the keys.
fn dense_case() -> impl Strategy<Value = DenseCase> {
    (block(), -3.0f32..3.0).prop_map(|(b, shift)| {
        let keys = b.keys();
        let tile = |t: usize| {
            let mut s = keys.scores().to_vec();
            if t == 1 {
                s.iter_mut().for_each(|x| *x += shift);
            }
            let vis = keys.vis.map(|m| if t == 0 { m } else { m.rotate_left(3) });
            let (nk, v, stride) = (b.nk, b.v.clone(), b.stride);
            DenseTile {
                s,
                vis,
                nk,
                v,
                stride,
            }
        };
        DenseCase {
            hd: b.hd,
            tiles: vec![tile(0), tile(1)],
        }
    })
}

/// `(keys, thresholds, open lanes)`.
fn candidates_case() -> impl Strategy<Value = (AttnKeys, [f32; ATTN_LANES], u16)> {
    let thr = vec(
        prop_oneof![-1.0f32..1.0, Just(f32::NEG_INFINITY)],
        ATTN_LANES,
    );
    (block(), thr, any::<u16>())
        .prop_map(|(b, thr, open)| (b.keys(), core::array::from_fn(|l| thr[l]), open))
}

/// `(keys, row stride)`.
fn scores_rows_case() -> impl Strategy<Value = (AttnKeys, usize)> {
    (block(), 16usize..20).prop_map(|(b, rs)| (b.keys(), rs))
}

/// The slots of one row of up to 40 (values in [-1, 1]).
fn softmax_rows_case() -> impl Strategy<Value = SlotsCase> {
    (1usize..=40, 0usize..=40).prop_flat_map(|(hd, n)| {
        let (sc, ix) = (vec(-20.0f32..20.0, n), vec(0u16..50, n));
        (sc, ix, vec(-1.0f32..1.0, 50 * hd)).prop_map(move |(sc, ix, v)| SlotsCase {
            hd,
            k: n,
            stride: hd,
            os: hd,
            lens: vec![n as u32],
            sc,
            ix,
            v,
        })
    })
}

/// 1 to 16 lanes of up to `k` slots (values in [-1, 1]), output rows padded by 0 to 2.
fn softmax_lanes_case() -> impl Strategy<Value = SlotsCase> {
    (1usize..=40, 1usize..=40, 0usize..3).prop_flat_map(|(hd, k, pad)| {
        let lens = vec(0u32..=k as u32, 1..=16);
        let (sc, ix) = (vec(-20.0f32..20.0, 16 * k), vec(0u16..50, 16 * k));
        (lens, sc, ix, vec(-1.0f32..1.0, 50 * hd)).prop_map(move |(lens, sc, ix, v)| SlotsCase {
            hd,
            k,
            stride: hd,
            os: hd + pad,
            lens,
            sc,
            ix,
            v,
        })
    })
}

/// `(blocks, k)`.
fn topk_case() -> impl Strategy<Value = (Vec<KeyBlock>, usize)> {
    (vec(key_block(), 1..5), 1usize..=32)
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx512 {
    use super::*;
    use topkit::kernels;
    use topkit_tests::kernel_checks::Tol;
    use topkit_tests::kernel_test;
    // On a CPU without AVX-512F the kernels fall back to the generic ones; say so.
    #[test]
    fn reports_whether_the_cpu_has_avx512() {
        eprintln!(
            "AVX-512F/BW/VL available: {}",
            kernels::x86_avx512_attn_available()
        );
    }

    /// `exp` over a slice: within 3e-7 relative of `exp_poly` (each is within 1.2e-7 of the
    /// truth as measured; the FMA moves the last bit), the same 0 below the range, `exp(0) ==
    /// 1`, and its own max error against f64 within 2e-7.
    #[test]
    fn exp() {
        let f = kernels::x86_avx512_exp_f32;
        let err = exp_rel_error(f, EXP_POLY_MIN, EXP_POLY_MAX, 2_000_001);
        eprintln!("x86_avx512_exp_f32 max relative error: {err:.3e}");
        assert!(err <= 2e-7, "{err}");
        let x = [0.0, -1e-3, -0.5, -3.0, -87.0, -88.0, f32::NEG_INFINITY, 5.0];
        check::exp(&x, f, Tol::Rel(3e-7));
    }
    kernel_test!(proptest scores_tile, block().prop_map(|b| b.keys())
        => check::attn_scores_tile, kernels::x86_avx512_attn_scores_tile, Tol::Bound);
    // Each lane's normalised output within 1e-6 (values in [-1, 1]).
    kernel_test!(proptest dense_tile, dense_case()
        => check::attn_dense_tile, kernels::x86_avx512_attn_dense_tile, Tol::Abs(1e-6));
    kernel_test!(proptest candidates, candidates_case()
        => check::attn_candidates, kernels::x86_avx512_attn_candidates);
    kernel_test!(proptest softmax_rows, softmax_rows_case()
        => check::attn_softmax_rows, kernels::x86_avx512_attn_softmax_rows, Tol::Abs(1e-6));
    kernel_test!(proptest softmax_lanes, softmax_lanes_case()
        => check::attn_softmax_lanes, kernels::x86_avx512_attn_softmax_lanes,
        kernels::x86_avx512_attn_softmax_rows, Tol::Abs(1e-6));
    kernel_test!(proptest scores_rows, scores_rows_case()
        => check::attn_scores_rows, kernels::x86_avx512_attn_scores_rows,
        kernels::x86_avx512_attn_scores_tile, Tol::Bound);
    kernel_test!(proptest topk_block, topk_case()
        => check::attn_topk_block, kernels::x86_avx512_attn_topk_block);
}
