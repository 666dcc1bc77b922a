//! The core's wasm `simd128` kernels against the generic ones, run in node by
//! `wasm-bindgen-test-runner` (`cargo xtask test-wasm`, simd128 build only). One macro per
//! operation over deterministic pseudo-random cases (shapes around the tile and block edges,
//! the fallbacks included): the integer products and the quantization must give the generic
//! bits (the design promises it: exact i32 sums, the same float epilogue), the vector `exp`
//! the bits of `exp_poly`, the attention tiles the generic bits (the same float operations in
//! the same order, lane by lane), and GELU stays within `|x| * 3e-7 + 1e-7` of `activate_fast` (its
//! `exp` is the polynomial, not the math library's).
#![cfg(all(target_arch = "wasm32", target_feature = "simd128"))]

use core::arch::wasm32::{f32x4, f32x4_extract_lane};
use topkit::Activation;
use topkit::kernels::attention::{self as attn, ATTN_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState};
use topkit::kernels::{
    self, AttnScoresArgs, AttnSoftmaxArgs, AttnTile, AttnTopkArgs, FfnArgs, Matrix, Q8Rows, Weights,
};
use wasm_bindgen_test::wasm_bindgen_test;

/// Deterministic pseudo-random numbers (64-bit LCG, high bits).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
    /// Activation-like int8 values: never -128, as `quantize_i8` never produces it.
    fn q8s(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| ((self.next() % 255) as i32 - 127) as i8)
            .collect()
    }
    /// Uniform in `[-m, m)`.
    fn f32(&mut self, m: f32) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 * m - m
    }
    /// Values of mixed magnitude, with runs of zeros (all-zero quantization blocks).
    fn activations(&mut self, n: usize) -> Vec<f32> {
        let zero_from = self.next() as usize % (n + 1);
        let zero_len = if self.next().is_multiple_of(3) { 70 } else { 0 };
        (0..n)
            .map(|i| {
                if i >= zero_from && i < zero_from + zero_len {
                    0.0
                } else {
                    let m = [1e-3, 1.0, 50.0, 1e3][self.next() as usize % 4];
                    self.f32(m)
                }
            })
            .collect()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Columns around the 8-column loads, the 64-column blocks and the model's widths.
const COLS: &[usize] = &[
    1, 3, 7, 8, 9, 15, 16, 63, 64, 65, 71, 100, 128, 200, 384, 1536, 4096,
];

/// `matmul_q8_tokens`: `$f` gives the bits of the generic kernel for int8 weights, over
/// rows and tokens around the 4 x 2 register tiles, with and without bias.
macro_rules! test_matmul_q8_tokens {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(1);
            for &cols in COLS {
                for &(rows, n) in &[
                    (1, 1),
                    (3, 2),
                    (4, 3),
                    (5, 5),
                    (9, 16),
                    (40, 17),
                    (6, 40),
                    (3, 300),
                ] {
                    if cols * rows * n > 4_000_000 {
                        continue;
                    }
                    let nb = kernels::q8_blocks(cols);
                    let q = rng.i8s(rows * cols);
                    let scales: Vec<f32> = (0..rows).map(|_| rng.f32(0.1).abs() + 1e-4).collect();
                    let bias: Vec<f32> = (0..rows).map(|_| rng.f32(1.0)).collect();
                    let x = rng.activations(n * cols);
                    let mut xq = vec![0i8; n * cols];
                    let mut xs = vec![0f32; n * nb];
                    for t in 0..n {
                        kernels::quantize_i8_token(
                            &x[t * cols..(t + 1) * cols],
                            &mut xq[t * cols..(t + 1) * cols],
                            &mut xs[t * nb..(t + 1) * nb],
                        );
                    }
                    let w = Matrix::new(
                        rows,
                        cols,
                        Weights::I8 {
                            q: &q,
                            scales: &scales,
                        },
                    )
                    .unwrap();
                    for b in [None, Some(bias.as_slice())] {
                        let mut want = vec![0f32; n * rows];
                        kernels::matmul_q8_tokens(&w, Q8Rows { q: &xq, s: &xs, n }, b, &mut want);
                        let mut got = vec![f32::NAN; n * rows];
                        $f(&w, Q8Rows { q: &xq, s: &xs, n }, b, &mut got);
                        assert_eq!(bits(&got), bits(&want), "rows {rows} cols {cols} n {n}");
                    }
                }
            }
        }
    };
}

/// `matmul_i8_i8_token` (quantization and product): `$f` gives the generic bits.
macro_rules! test_matmul_i8_i8_token {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(2);
            for &cols in COLS {
                for &(rows, n) in &[(2, 1), (7, 3), (12, 33), (3, 270)] {
                    if cols * rows * n > 4_000_000 {
                        continue;
                    }
                    let q = rng.i8s(rows * cols);
                    let scales: Vec<f32> = (0..rows).map(|_| rng.f32(0.1).abs() + 1e-4).collect();
                    let x = rng.activations(n * cols);
                    let w = Matrix::new(
                        rows,
                        cols,
                        Weights::I8 {
                            q: &q,
                            scales: &scales,
                        },
                    )
                    .unwrap();
                    let mut want = vec![0f32; n * rows];
                    kernels::matmul_i8_i8_token(&w, &x, n, None, &mut want);
                    let mut got = vec![f32::NAN; n * rows];
                    $f(&w, &x, n, None, &mut got);
                    assert_eq!(bits(&got), bits(&want), "rows {rows} cols {cols} n {n}");
                }
            }
        }
    };
}

/// `accumulate_q8_tokens`: `$f` gives the generic bits, over `k` even, odd, the feed-forward's
/// 64 and past the kernel's limit (generic fallback), columns below, at and past 8.
macro_rules! test_accumulate_q8_tokens {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(3);
            for &cols in &[1usize, 7, 8, 9, 13, 16, 40, 384] {
                for &k in &[0usize, 1, 2, 5, 64, 65, 600] {
                    for &n in &[1usize, 3, 4, 7, 16, 17, 70, 300] {
                        if k * cols * n > 2_000_000 {
                            continue;
                        }
                        let q = rng.i8s(k * cols);
                        let hq = rng.q8s(n * k);
                        let hs: Vec<f32> = (0..n).map(|_| rng.f32(0.1).abs() + 1e-4).collect();
                        let out0: Vec<f32> = (0..n * cols).map(|_| rng.f32(5.0)).collect();
                        let mut want = out0.clone();
                        kernels::accumulate_q8_tokens(
                            &mut want,
                            &q,
                            cols,
                            Q8Rows { q: &hq, s: &hs, n },
                        );
                        let mut got = out0.clone();
                        $f(&mut got, &q, cols, Q8Rows { q: &hq, s: &hs, n });
                        assert_eq!(bits(&got), bits(&want), "cols {cols} k {k} n {n}");
                    }
                }
            }
        }
    };
}

/// `quantize_i8_token`: `$f` gives the generic values and scales (finite inputs, zero blocks
/// and exact halves included).
macro_rules! test_quantize_i8_token {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(4);
            for len in (0..=200).chain([255, 256, 383, 384, 1536]) {
                let mut x = rng.activations(len);
                // Values that land on exact halves of the step: ties round away from zero.
                if len > 2 {
                    x[0] = 127.0;
                    x[1] = 0.5;
                    x[2] = -1.5;
                }
                let nb = kernels::q8_blocks(len);
                let (mut qw, mut sw) = (vec![0i8; len], vec![0f32; nb]);
                kernels::quantize_i8_token(&x, &mut qw, &mut sw);
                let (mut qg, mut sg) = (vec![0i8; len], vec![0f32; nb]);
                $f(&x, &mut qg, &mut sg);
                assert_eq!(qg, qw, "len {len}");
                assert_eq!(bits(&sg), bits(&sw), "len {len}");
            }
        }
    };
}

/// GELU (erf form) in place: `$f` is within `|x| * 3e-7 + 1e-7` of `activate_fast` (which
/// takes the math library's `exp`; `$f` the polynomial one), lengths past every lane count.
macro_rules! test_gelu_erf {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(5);
            let mut worst = 0f32;
            for len in 0..=40 {
                for m in [1.0f32, 10.0, 100.0] {
                    let x: Vec<f32> = (0..len).map(|_| rng.f32(m)).collect();
                    let mut got = x.clone();
                    $f(&mut got);
                    for (&v, &g) in x.iter().zip(&got) {
                        let want = kernels::activate_fast(Activation::GeluErf, v);
                        let err = (g - want).abs();
                        assert!(err <= v.abs() * 3e-7 + 1e-7, "gelu({v}) = {g} vs {want}");
                        worst = worst.max(err / (v.abs() + 1.0));
                    }
                }
            }
            wasm_bindgen_test::console_log!("gelu: worst |err| / (|x| + 1) = {worst:e}");
        }
    };
}

/// `exp_poly` on 4 lanes: `$f` gives the bits of the scalar one, over the domain, its limits,
/// past them, infinities and NaN.
macro_rules! test_exp_f32x4 {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(6);
            let mut xs: Vec<f32> = (0..20_000).map(|_| rng.f32(100.0)).collect();
            xs.extend((0..2000).map(|_| rng.f32(1.0)));
            xs.extend([
                0.0,
                -0.0,
                kernels::EXP_POLY_MIN,
                kernels::EXP_POLY_MAX,
                f32::from_bits(kernels::EXP_POLY_MIN.to_bits() + 1),
                f32::from_bits(kernels::EXP_POLY_MAX.to_bits() + 1),
                -1e30,
                1e30,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                88.0,
                -87.0,
            ]);
            for c in xs.chunks(4) {
                let x = [0, 1, 2, 3].map(|i| c.get(i).copied().unwrap_or(0.0));
                let v = $f(f32x4(x[0], x[1], x[2], x[3]));
                let got = [
                    f32x4_extract_lane::<0>(v),
                    f32x4_extract_lane::<1>(v),
                    f32x4_extract_lane::<2>(v),
                    f32x4_extract_lane::<3>(v),
                ];
                for (g, &xi) in got.iter().zip(&x) {
                    let want = kernels::exp_poly(xi);
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "exp({xi}) = {g} vs {want}"
                    );
                }
            }
        }
    };
}

/// Query blocks, keys and values for the attention tile tests: `hd` columns, `nk` keys of
/// stride `hd + pad`, scores of mixed size, visibility patterns (all, causal-like, random,
/// none).
struct AttnCase {
    qt: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    stride: usize,
    vis: [u16; ATTN_TILE],
}

fn attn_case(rng: &mut Rng, hd: usize, nk: usize, pattern: u32) -> AttnCase {
    let stride = hd + (rng.next() % 3) as usize;
    let qt = (0..hd * ATTN_LANES).map(|_| rng.f32(2.0)).collect();
    let n = (nk.max(1) - 1) * stride + hd;
    let k = (0..n).map(|_| rng.f32(2.0)).collect();
    let v = (0..n).map(|_| rng.f32(3.0)).collect();
    let vis = core::array::from_fn(|j| match pattern {
        0 => u16::MAX,
        // Lanes l >= j see key j (a causal block).
        1 => u16::MAX << j.min(15),
        2 => rng.next() as u16,
        _ => 0,
    });
    AttnCase {
        qt,
        k,
        v,
        stride,
        vis,
    }
}

/// `attn_scores_tile`: `$f` gives the generic bits (head widths around the vector width and
/// up to `ATTN_MAX_HEAD_DIM`, tiles of 0 to 16 keys, entries past `nk` untouched).
macro_rules! test_attn_scores_tile {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(7);
            for hd in [1usize, 3, 4, 8, 31, 32, 64, 100, 128] {
                for nk in 0..=ATTN_TILE {
                    let c = attn_case(&mut rng, hd, nk, 0);
                    let scale = 1.0 / (hd as f32).sqrt();
                    let s0: Vec<f32> = (0..ATTN_BLOCK).map(|_| rng.f32(9.0)).collect();
                    let mut want: [f32; ATTN_BLOCK] = s0.clone().try_into().unwrap();
                    attn::attn_scores_tile(
                        &AttnScoresArgs {
                            qt: &c.qt,
                            hd,
                            k: &c.k,
                            stride: c.stride,
                            nk,
                            scale,
                        },
                        &mut want,
                    );
                    let mut got: [f32; ATTN_BLOCK] = s0.try_into().unwrap();
                    $f(
                        &AttnScoresArgs {
                            qt: &c.qt,
                            hd,
                            k: &c.k,
                            stride: c.stride,
                            nk,
                            scale,
                        },
                        &mut got,
                    );
                    assert_eq!(bits(&got), bits(&want), "hd {hd} nk {nk}");
                }
            }
        }
    };
}

/// `attn_dense_tile`: `$f` leaves the generic bits in the state (maxima, sums, accumulators),
/// over several tiles in a row (rescaling), visibility patterns, head widths and tile sizes,
/// starting from the empty state.
macro_rules! test_attn_dense_tile {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(8);
            for hd in [1usize, 3, 4, 8, 32, 36, 64, 100, 128] {
                for pattern in 0..4 {
                    let (mut wa, mut ga) =
                        (vec![0f32; ATTN_LANES * hd], vec![0f32; ATTN_LANES * hd]);
                    let (mut want, mut got) =
                        (AttnDenseState::new(&mut wa), AttnDenseState::new(&mut ga));
                    for tile in 0..4 {
                        let nk = [ATTN_TILE, 5, 1, 0][tile];
                        let c = attn_case(&mut rng, hd, nk.max(1), pattern);
                        // Scores of a growing range, so that later tiles raise the maxima.
                        let m = [1.0f32, 8.0, 30.0, 2.0][tile];
                        let s: [f32; ATTN_BLOCK] = core::array::from_fn(|_| rng.f32(m));
                        attn::attn_dense_tile(
                            &AttnTile {
                                s: &s,
                                vis: &c.vis,
                                nk,
                            },
                            &c.v,
                            c.stride,
                            hd,
                            &mut want,
                        );
                        $f(
                            &AttnTile {
                                s: &s,
                                vis: &c.vis,
                                nk,
                            },
                            &c.v,
                            c.stride,
                            hd,
                            &mut got,
                        );
                        assert_eq!(
                            bits(&got.max),
                            bits(&want.max),
                            "hd {hd} pattern {pattern} tile {tile}: max"
                        );
                        assert_eq!(
                            bits(&got.sum),
                            bits(&want.sum),
                            "hd {hd} pattern {pattern} tile {tile}: sum"
                        );
                        let n = ATTN_LANES * hd;
                        assert_eq!(
                            bits(&got.acc[..n]),
                            bits(&want.acc[..n]),
                            "hd {hd} pattern {pattern} tile {tile}: acc"
                        );
                    }
                }
            }
        }
    };
}

/// The fused dense int8 feed-forward: `$f` gives the bits of the unfused fast kernels (the
/// generic int8 products, the simd128 GELU of `Kernels::activate_slice`, each unit times its
/// `down_t` row scale, one int8 scale per token and 64 units), with and without biases, over
/// widths around the 8-column loads, token counts around the groups of 16 and past one
/// pass; shapes it does not take (`d_ff` not a multiple of 64, `d` over its maximum) must
/// be refused without touching the output.
macro_rules! test_ffn_q8 {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            use topkit::kernels::Kernels;
            let mut rng = Rng(9);
            let cases: &[(usize, usize, usize)] = &[
                (1, 64, 1),
                (7, 64, 5),
                (8, 128, 16),
                (13, 64, 17),
                (40, 192, 33),
                (64, 64, 300),
                (384, 128, 20),
                (1024, 64, 3),
                (16, 100, 4),
                (1100, 64, 2),
            ];
            for &(d, d_ff, n) in cases {
                for (act, biased) in [(Activation::GeluErf, true), (Activation::Relu, false)] {
                    let uq = rng.i8s(d_ff * d);
                    let us: Vec<f32> = (0..d_ff).map(|_| rng.f32(0.02).abs() + 1e-3).collect();
                    let ub: Vec<f32> = (0..d_ff).map(|_| rng.f32(0.5)).collect();
                    let dq = rng.i8s(d_ff * d);
                    let ds: Vec<f32> = (0..d_ff).map(|_| rng.f32(0.02).abs() + 1e-3).collect();
                    let db: Vec<f32> = (0..d).map(|_| rng.f32(0.5)).collect();
                    let x = rng.activations(n * d);
                    let w8 = |q, s| Matrix::new(d_ff, d, Weights::I8 { q, scales: s }).unwrap();
                    let (up, down_t) = (w8(&uq, &us), w8(&dq, &ds));
                    let ub = biased.then_some(ub.as_slice());
                    let out0: Vec<f32> = (0..n * d)
                        .map(|i| if biased { db[i % d] } else { 0.0 })
                        .collect();
                    let mut got = out0.clone();
                    let fused = $f(
                        &FfnArgs {
                            up: &up,
                            up_bias: ub,
                            act,
                            down_t: &down_t,
                            x: &x,
                            n,
                        },
                        &mut got,
                    );
                    if d_ff % 64 != 0 || d > 1024 {
                        assert!(!fused, "d {d} d_ff {d_ff}: not the fused kernel's shape");
                        assert_eq!(bits(&got), bits(&out0), "d {d} d_ff {d_ff}: output touched");
                        continue;
                    }
                    assert!(fused, "d {d} d_ff {d_ff}");
                    let nb = kernels::q8_blocks(d);
                    let mut want = out0.clone();
                    for t in 0..n {
                        let (xt, ot) = (&x[t * d..(t + 1) * d], &mut want[t * d..(t + 1) * d]);
                        let (mut xq, mut xs) = (vec![0i8; d], vec![0f32; nb]);
                        kernels::quantize_i8_token(xt, &mut xq, &mut xs);
                        let mut h = vec![0f32; d_ff];
                        kernels::matmul_q8_tokens(
                            &up,
                            Q8Rows {
                                q: &xq,
                                s: &xs,
                                n: 1,
                            },
                            ub,
                            &mut h,
                        );
                        Kernels::Fast.activate_slice(act, &mut h);
                        for (j0, hb) in h.chunks_mut(64).enumerate() {
                            let j0 = j0 * 64;
                            for (v, &sc) in hb.iter_mut().zip(&ds[j0..]) {
                                *v *= sc;
                            }
                            let (mut hq, mut hs) = (vec![0i8; hb.len()], [0f32]);
                            kernels::quantize_i8_token(hb, &mut hq, &mut hs);
                            let dqb = &dq[j0 * d..(j0 + hb.len()) * d];
                            kernels::accumulate_q8_tokens(
                                ot,
                                dqb,
                                d,
                                Q8Rows {
                                    q: &hq,
                                    s: &hs,
                                    n: 1,
                                },
                            );
                        }
                    }
                    assert_eq!(bits(&got), bits(&want), "d {d} d_ff {d_ff} n {n} {act:?}");
                }
            }
        }
    };
}

/// `attn_scores_rows`: `$f` gives the generic bits (tiles of 0 to 16 keys, row strides past
/// the tile, entries past `nk` untouched).
macro_rules! test_attn_scores_rows {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(10);
            for hd in [1usize, 4, 7, 32, 64] {
                for nk in 0..=ATTN_TILE {
                    let c = attn_case(&mut rng, hd, nk, 0);
                    let rs = ATTN_TILE + (rng.next() % 20) as usize;
                    let r0: Vec<f32> = (0..ATTN_LANES * rs).map(|_| rng.f32(9.0)).collect();
                    let (mut want, mut got) = (r0.clone(), r0);
                    let scale = 0.3;
                    attn::attn_scores_rows(
                        &AttnScoresArgs {
                            qt: &c.qt,
                            hd,
                            k: &c.k,
                            stride: c.stride,
                            nk,
                            scale,
                        },
                        &mut want,
                        rs,
                    );
                    $f(
                        &AttnScoresArgs {
                            qt: &c.qt,
                            hd,
                            k: &c.k,
                            stride: c.stride,
                            nk,
                            scale,
                        },
                        &mut got,
                        rs,
                    );
                    assert_eq!(bits(&got), bits(&want), "hd {hd} nk {nk} rs {rs}");
                }
            }
        }
    };
}

/// `attn_softmax_lanes`: `$f` gives the generic bits (kept slots from none to `k`, score
/// ranges that reach the exponential's limits, head widths around the vector width, rows in
/// any order, repeated rows).
macro_rules! test_attn_softmax_lanes {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(11);
            for hd in [1usize, 3, 4, 16, 20, 32, 64, 100] {
                for k in [1usize, 5, 8, 32] {
                    let nv = 40;
                    let stride = hd + (rng.next() % 3) as usize;
                    let v: Vec<f32> = (0..nv * stride).map(|_| rng.f32(3.0)).collect();
                    let m = [1.0f32, 30.0, 200.0][rng.next() as usize % 3];
                    let scores: Vec<f32> = (0..ATTN_LANES * k).map(|_| rng.f32(m)).collect();
                    let idx: Vec<u16> = (0..ATTN_LANES * k)
                        .map(|_| (rng.next() % nv as u32) as u16)
                        .collect();
                    let lens: Vec<u32> = (0..ATTN_LANES)
                        .map(|l| {
                            if l == 3 {
                                0
                            } else {
                                rng.next() % (k as u32 + 1)
                            }
                        })
                        .collect();
                    let os = hd + 2;
                    let o0: Vec<f32> = (0..ATTN_LANES * os).map(|_| rng.f32(1.0)).collect();
                    let (mut want, mut got) = (o0.clone(), o0);
                    attn::attn_softmax_lanes(
                        &AttnSoftmaxArgs {
                            scores: &scores,
                            idx: &idx,
                            lens: &lens,
                            k,
                            v: &v,
                            stride,
                            hd,
                        },
                        &mut want,
                        os,
                    );
                    $f(
                        &AttnSoftmaxArgs {
                            scores: &scores,
                            idx: &idx,
                            lens: &lens,
                            k,
                            v: &v,
                            stride,
                            hd,
                        },
                        &mut got,
                        os,
                    );
                    assert_eq!(bits(&got), bits(&want), "hd {hd} k {k}");
                }
            }
        }
    };
}

/// `attn_topk_block`: `$f` keeps the generic slots (scores and key indices), block after
/// block, for `k` from 1 to the block maximum, visibility patterns of every kind, and scores
/// with ties, `-0.0`, infinities and NaN.
macro_rules! test_attn_topk_block {
    ($name:ident, $f:path) => {
        #[wasm_bindgen_test]
        fn $name() {
            let mut rng = Rng(12);
            for k in [1usize, 2, 7, 16, 17, 31, 32] {
                // Each side its own work buffers of exactly the planned size.
                let words = attn::AttnTopkWork::words(k, 16 * ATTN_TILE);
                let (mut wb, mut gb) = (vec![0f32; words], vec![0f32; words]);
                let (mut ww, mut gw) = (
                    attn::AttnTopkWork::new(&mut wb),
                    attn::AttnTopkWork::new(&mut gb),
                );
                for pattern in 0..5u32 {
                    let (mut ws, mut wi) = (vec![0f32; k], vec![0u16; k]);
                    let (mut gs, mut gi) = (vec![0f32; k], vec![0u16; k]);
                    let (mut wl, mut gl) = (0, 0);
                    for block in 0..4 {
                        let nt = [16usize, 3, 1, 8][block];
                        let row: Vec<f32> = (0..nt * ATTN_TILE)
                            .map(|_| match rng.next() % 16 {
                                0 => f32::NAN,
                                1 => f32::INFINITY,
                                2 => f32::NEG_INFINITY,
                                3 => -0.0,
                                4 => 0.0,
                                5 | 6 => 1.5,
                                _ => rng.f32(8.0),
                            })
                            .collect();
                        let vis: Vec<u16> = (0..nt)
                            .map(|t| match pattern {
                                0 => u16::MAX,
                                1 => u16::MAX << (t % 16),
                                2 => rng.next() as u16,
                                3 => 0,
                                _ => 1 << (rng.next() % 16),
                            })
                            .collect();
                        let kb0 = block * 256;
                        wl = attn::attn_topk_block(
                            &AttnTopkArgs {
                                row: &row,
                                vis: &vis,
                                kb0,
                                k,
                            },
                            &mut ws,
                            &mut wi,
                            wl,
                            &mut ww,
                        );
                        gl = $f(
                            &AttnTopkArgs {
                                row: &row,
                                vis: &vis,
                                kb0,
                                k,
                            },
                            &mut gs,
                            &mut gi,
                            gl,
                            &mut gw,
                        );
                        assert_eq!(gl, wl, "k {k} pattern {pattern} block {block}: length");
                        assert_eq!(
                            bits(&gs[..gl]),
                            bits(&ws[..wl]),
                            "k {k} pattern {pattern} block {block}"
                        );
                        assert_eq!(gi[..gl], wi[..wl], "k {k} pattern {pattern} block {block}");
                    }
                }
            }
        }
    };
}

test_matmul_q8_tokens!(matmul_q8_tokens, kernels::wasm_simd128_matmul_q8_tokens);
test_matmul_i8_i8_token!(matmul_i8_i8_token, kernels::wasm_simd128_matmul_i8_i8_token);
test_accumulate_q8_tokens!(
    accumulate_q8_tokens,
    kernels::wasm_simd128_accumulate_q8_tokens
);
test_quantize_i8_token!(quantize_i8_token, kernels::wasm_simd128_quantize_i8_token);
test_gelu_erf!(gelu_erf, kernels::wasm_simd128_gelu_erf);
test_ffn_q8!(ffn_q8, kernels::wasm_simd128_ffn_q8);
test_exp_f32x4!(exp_f32x4, kernels::wasm_simd128_exp_f32x4);
test_attn_scores_tile!(attn_scores_tile, kernels::wasm_simd128_attn_scores_tile);
test_attn_dense_tile!(attn_dense_tile, kernels::wasm_simd128_attn_dense_tile);
test_attn_scores_rows!(attn_scores_rows, kernels::wasm_simd128_attn_scores_rows);
test_attn_softmax_lanes!(attn_softmax_lanes, kernels::wasm_simd128_attn_softmax_lanes);
test_attn_topk_block!(attn_topk_block, kernels::wasm_simd128_attn_topk_block);
