//! The int8-activation kernels and the arch kernels of the host fast path.
//!
//! - Generic int8 kernels against exact references: `dot_i8_i8` equals the i64 sum;
//!   `quantize_i8` rounds to nearest (error at most `scale / 2` per element, `|q| <= 127`);
//!   `matmul_i8_i8_token` equals, bit for bit, the documented formula over the input quantized
//!   in blocks of `Q8_BLOCK`, and is within half a block step per element of the f32 product;
//!   `accumulate_q8_tokens` is the exact i32 sum times the token's scale, added to `out`.
//! - The engine's int8 product (`Kernels::Fast.matmul` on the planned scratch, and the
//!   quantize-once pass `Kernels::quantize_q8` + `Kernels::matmul_q8`) gives the generic bits with
//!   whatever kernels this target runs (AVX-512 VNNI packing on x86-64), with the plan's
//!   scratch and with the smallest one (one group of tokens per pass).
//! - Arch kernels against the generic ones: the checks of `topkit_tests::kernel_checks` (one
//!   per op, shared with the wasm simd128 tests) over proptest cases, for every arch module
//!   this build has (x86-64 AVX2/FMA and AVX-512 in std builds): integer ops must be
//!   bit-identical; the FMA f32 dot within `(n + 3) * EPS * sum|a_i b_i|` of the generic one
//!   (both are within `n * EPS * sum|a_i b_i|` of the exact value).

// The arch kernels' case strategies are used only in builds that have an arch module.
#![cfg_attr(not(all(feature = "std", target_arch = "x86_64")), allow(dead_code))]

use proptest::collection::vec;
use proptest::prelude::*;
use topkit::kernels::{self, BlockType, Kernels, Matrix, Q8Rows, Weights};
use topkit_tests::kernel_checks::{
    AccF32Case, AccQ8Case, BlockCase, FfnQ8Case, MatF32Case, Q8Case, bits,
};

/// An arena of `bytes` bytes (16-byte aligned).
fn arena_mem(bytes: usize) -> Vec<u128> {
    vec![0u128; bytes.div_ceil(16)]
}

fn i8s(n: usize) -> impl Strategy<Value = Vec<i8>> {
    vec(any::<i8>(), n)
}

fn token_case() -> impl Strategy<Value = Q8Case> {
    // Rows past one and two groups of 16, columns in and past whole blocks, tokens past a
    // group of 16.
    let cols = prop_oneof![
        1usize..=40,
        1usize..=300,
        (1usize..=12).prop_map(|b| b * 64),
        (1usize..=100).prop_map(|b| b * 4)
    ];
    (
        prop_oneof![1usize..=6, 1usize..=40],
        cols,
        prop_oneof![1usize..=5, 1usize..=40],
    )
        .prop_flat_map(|(rows, cols, n)| {
            (
                Just(rows),
                Just(cols),
                Just(n),
                i8s(rows * cols),
                vec(1e-4f32..0.1, rows),
                vec(-50.0f32..50.0, n * cols),
                proptest::option::of(vec(-1.0f32..1.0, rows)),
            )
        })
        .prop_map(|(rows, cols, n, w, scales, x, bias)| Q8Case {
            rows,
            cols,
            n,
            w,
            scales,
            x,
            bias,
        })
}

proptest! {
    #[test]
    fn matmul_i8_i8_token_is_the_documented_formula(c in token_case()) {
        let (w, Q8Case { rows, cols, n, w: q, scales, x, bias }) = (c.matrix(), &c);
        let (rows, cols, n) = (*rows, *cols, *n);
        let mut y = vec![0f32; n * rows];
        kernels::matmul_i8_i8_token(&w, x, n, bias.as_deref(), &mut y);
        let bl = kernels::Q8_BLOCK;
        for i in 0..n {
            let xi = &x[i * cols..(i + 1) * cols];
            let mut xq = vec![0i8; cols];
            let mut sx = vec![0f32; cols.div_ceil(bl)];
            for (b, (xb, qb)) in xi.chunks(bl).zip(xq.chunks_mut(bl)).enumerate() {
                sx[b] = kernels::quantize_i8(xb, qb);
            }
            for r in 0..rows {
                let wr = &q[r * cols..(r + 1) * cols];
                // Exact i32 per block, blocks summed left to right in f32.
                let mut v = 0f32;
                for (b, (wb, xb)) in wr.chunks(bl).zip(xq.chunks(bl)).enumerate() {
                    let acc: i32 = wb.iter().zip(xb).map(|(&p, &c)| p as i32 * c as i32).sum();
                    v += acc as f32 * sx[b];
                }
                let mut want = v * scales[r];
                if let Some(b) = bias {
                    want += b[r];
                }
                prop_assert_eq!(y[i * rows + r].to_bits(), want.to_bits());
                let exact: f64 = wr.iter().zip(xi).map(|(&a, &v)| a as f64 * v as f64).sum::<f64>() * scales[r] as f64
                    + bias.as_ref().map_or(0.0, |b| b[r] as f64);
                let tol: f64 = wr.iter().enumerate().map(|(c, &a)| (a as f64).abs() * 0.5 * sx[c / bl] as f64).sum::<f64>() * scales[r] as f64 * 1.001 + 1e-3;
                prop_assert!((y[i * rows + r] as f64 - exact).abs() <= tol, "{} vs {} (tol {})", y[i * rows + r], exact, tol);
            }
        }
    }
}

proptest! {
    #[test]
    fn dot_i8_i8_is_exact((a, b) in i8_pair()) {
        let want: i64 = a.iter().zip(&b).map(|(&p, &q)| p as i64 * q as i64).sum();
        prop_assert_eq!(kernels::dot_i8_i8(&a, &b) as i64, want);
    }

    #[test]
    fn quantize_i8_rounds_to_nearest(x in vec(-1e3f32..1e3, 0..300)) {
        let mut q = vec![0i8; x.len()];
        let s = kernels::quantize_i8(&x, &mut q);
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        prop_assert!((s - max / 127.0).abs() <= f32::EPSILON * s);
        for (&v, &qi) in x.iter().zip(&q) {
            prop_assert!(qi != i8::MIN, "q = -128 for {}", v);
            // Half a step, plus three f32 roundings of values of magnitude up to 127 (the
            // inverse scale, v times it, the + 0.5): a value just under a half step can round
            // up (x = [994.10754, 583.15753] gives t = 74.49999.. -> 75).
            let err = (v as f64 - s as f64 * qi as f64).abs();
            let slack = 4.0 * 127.0 * f32::EPSILON as f64;
            prop_assert!(err <= s as f64 * (0.5 + slack) + 1e-30, "{} -> {} * {}", v, qi, s);
        }
    }

}

proptest! {
    #[test]
    fn accumulate_q8_tokens_is_the_documented_formula((cols, k, n, q, hq, hs, out0) in (0usize..=70, 0usize..=9, 1usize..=5).prop_flat_map(|(c, k, n)| (Just(c), Just(k), Just(n), i8s(k * c), i8s(n * k), vec(1e-4f32..0.1, n), vec(-5.0f32..5.0, n * c)))) {
        let mut out = out0.clone();
        kernels::accumulate_q8_tokens(&mut out, &q, cols, Q8Rows { q: &hq, s: &hs, n });
        for t in 0..n {
            for c in 0..cols {
                // Exact in i32, then one multiply and one add.
                let acc: i64 = (0..k).map(|j| hq[t * k + j] as i64 * q[j * cols + c] as i64).sum();
                let want = out0[t * cols + c] + acc as i32 as f32 * hs[t];
                prop_assert_eq!(out[t * cols + c].to_bits(), want.to_bits());
            }
        }
    }

    /// A&S 7.1.26 is within 1.5e-7 of erf; the f32 evaluation and `math::exp` add a few ulp
    /// (std: 1e-6 in all) or micromath's approximate exp (2.1e-4 seen near x = -0.75: 1e-3
    /// allowed).
    #[test]
    fn erf_fast_is_close_to_erf(x in prop_oneof![-6.0f32..6.0, -0.5f32..0.5]) {
        let tol = if cfg!(feature = "std") { 1e-6 } else { 1e-3 };
        let want = topkit_tests::attention_ref::erf(x as f64);
        prop_assert!((kernels::erf_fast(x) as f64 - want).abs() <= tol, "erf_fast({}) = {}, erf = {}", x, kernels::erf_fast(x), want);
    }
}

proptest! {
    /// `Kernels::Fast.matmul` with int8 weights, on the scratch the plan gives it and on the
    /// smallest one (one group of 16 tokens, so several passes): the bits of the generic
    /// `matmul_i8_i8_token`, whatever kernels this target runs.
    #[test]
    fn fast_matmul_is_the_generic_product(c in token_case()) {
        let (w, Q8Case { rows, cols, n, x, bias, .. }) = (c.matrix(), &c);
        let (rows, cols, n) = (*rows, *cols, *n);
        let mut want = vec![0f32; n * rows];
        kernels::matmul_i8_i8_token(&w, x, n, bias.as_deref(), &mut want);
        let words = kernels::q8_scratch_bytes(cols, n) / 4;
        prop_assert!(words >= kernels::q8_group_words(cols));
        for scratch_words in [words, kernels::q8_group_words(cols)] {
            let mut scratch = vec![f32::NAN; scratch_words];
            let mut got = vec![f32::NAN; n * rows];
            Kernels::Fast.matmul(&w, x, n, bias.as_deref(), &mut got, &mut scratch);
            prop_assert_eq!(bits(&got), bits(&want), "{} words", scratch_words);
        }
    }

    /// The quantize-once pass: the tokens quantized by `Kernels::Fast.quantize_q8` (packed for
    /// the AVX-512 kernels on x86-64), multiplied by `Kernels::Fast.matmul_q8`, give the bits of the
    /// generic `matmul_q8_tokens` of the generic `quantize_i8_token`, for two matrices of one
    /// pass (as the feed-forward uses it).
    #[test]
    fn fast_q8_pass_is_the_generic_product(c in token_case()) {
        let n = c.n.min(16);
        let c = Q8Case { n, x: c.x[..n * c.cols].to_vec(), ..c };
        let (w, (xq, xs), Q8Case { rows, cols, x, bias, .. }) = (c.matrix(), c.tokens(), &c);
        let (rows, cols) = (*rows, *cols);
        let mut want = vec![0f32; n * rows];
        kernels::matmul_q8_tokens(&w, Q8Rows { q: &xq, s: &xs, n }, bias.as_deref(), &mut want);
        let mut scratch = vec![f32::NAN; kernels::q8_group_words(cols)];
        let pass = Kernels::Fast.quantize_q8(x, cols, &mut scratch);
        prop_assert_eq!(pass.len(), n);
        for _ in 0..2 {
            let mut got = vec![f32::NAN; n * rows];
            Kernels::Fast.matmul_q8(&w, &pass, bias.as_deref(), &mut got);
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}

fn ffn_case() -> impl Strategy<Value = FfnQ8Case> {
    // The fused AVX-512 kernel's shapes (d a multiple of 16, d_ff of 64, a group of 16 tokens
    // and its rest) and others, which take the unfused loop.
    let d = prop_oneof![(1usize..=8).prop_map(|c| c * 16), 1usize..=40];
    let d_ff = prop_oneof![(1usize..=4).prop_map(|u| u * 64), 1usize..=100];
    let act = prop_oneof![
        Just(topkit::Activation::GeluErf),
        Just(topkit::Activation::Relu)
    ];
    (d, d_ff, prop_oneof![1usize..=4, 1usize..=40], act).prop_flat_map(|(d, d_ff, n, act)| {
        let side = move |rows: usize, bias: usize| {
            (
                i8s(rows * d),
                vec(1e-3f32..0.05, rows),
                proptest::option::of(vec(-0.5f32..0.5, bias)),
            )
        };
        (side(d_ff, d_ff), side(d_ff, d), vec(-3.0f32..3.0, n * d)).prop_map(
            move |(up, down, x)| FfnQ8Case {
                d,
                d_ff,
                n,
                up,
                down,
                x,
                act,
            },
        )
    })
}

proptest! {
    /// The dense int8 feed-forward with the fast kernels (fused on AVX-512 where the CPU and
    /// the shapes allow) gives the bits of the unfused fast kernels: the up projection per
    /// token, the activation, each unit times its `down_t` row scale, one int8 scale per token
    /// and 64 units, exact down-projection sums.
    #[test]
    fn fast_ffn_q8_is_the_unfused_kernels(c in ffn_case()) {
        use topkit::ffn::{FfnScratch, FfnWeights, ffn_with};
        let (d, d_ff, n, act) = (c.d, c.d_ff, c.n, c.act);
        let (up, down_t) = c.matrices();
        let w = FfnWeights { up, up_bias: c.up.2.as_deref(), gate: None, down_t, down_layout: topkit::ffn::DownLayout::Transposed, down_bias: c.down.2.as_deref(), act };
        let mut mem = arena_mem(topkit::ffn::fast_scratch_bytes(d, d_ff, n, false));
        let mut arena = topkit::Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
        let mut s = FfnScratch::new_fast(&mut arena, d, d_ff, n, None, false).unwrap();
        let mut got = vec![f32::NAN; n * d];
        ffn_with(Kernels::Fast, &w, &c.x, None, &mut s, &mut got).unwrap();
        let want = c.unfused();
        let bad = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
        prop_assert!(bad.is_none(), "d {} d_ff {} n {} {:?}: first difference at {:?}: {:?} vs {:?}", d, d_ff, n, act, bad, bad.map(|i| got[i]), bad.map(|i| want[i]));
    }
}

proptest! {
    /// The dense f32 feed-forward with the fast kernels (AVX-512 where the CPU and shapes
    /// allow, else AVX2) against the reference kernels: fused multiply-adds in another order
    /// and the fast GELU (erf within 1.5e-7), so within `2e-5 * (1 + max |ref|)`.
    #[test]
    fn fast_ffn_f32_is_close_to_reference((d, d_ff, n) in (prop_oneof![(1usize..=8).prop_map(|c| c * 16), 1usize..=40], 1usize..=300, prop_oneof![1usize..=4, 1usize..=40]), seed in any::<u64>()) {
        use topkit::ffn::{FfnScratch, FfnWeights, ffn_with};
        let mut next = seeded(seed, 1.0);
        let uw: Vec<f32> = (0..d_ff * d).map(|_| next() * 0.2).collect();
        let dw: Vec<f32> = (0..d_ff * d).map(|_| next() * 0.2).collect();
        let ub: Vec<f32> = (0..d_ff).map(|_| next()).collect();
        let db: Vec<f32> = (0..d).map(|_| next()).collect();
        let x: Vec<f32> = (0..n * d).map(|_| next() * 3.0).collect();
        let up = Matrix::new(d_ff, d, Weights::F32(&uw)).unwrap();
        let down_t = Matrix::new(d_ff, d, Weights::F32(&dw)).unwrap();
        let w = FfnWeights { up, up_bias: Some(&ub), gate: None, down_t, down_layout: topkit::ffn::DownLayout::Transposed, down_bias: Some(&db), act: topkit::Activation::GeluErf };
        let mut mem = arena_mem(topkit::ffn::fast_scratch_bytes(d, d_ff, n, false));
        let mut arena = topkit::Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
        let mut sc = FfnScratch::new_fast(&mut arena, d, d_ff, n, None, false).unwrap();
        let (mut got, mut want) = (vec![f32::NAN; n * d], vec![f32::NAN; n * d]);
        ffn_with(Kernels::Fast, &w, &x, None, &mut sc, &mut got).unwrap();
        ffn_with(Kernels::Reference, &w, &x, None, &mut sc, &mut want).unwrap();
        let scale = 1.0 + want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            prop_assert!((*g as f64 - *e as f64).abs() <= 2e-5 * scale, "{}: {} vs {} (scale {})", i, g, e, scale);
        }
    }
}

// ---- Cases of the arch kernel checks (`topkit_tests::kernel_checks`).

/// Seeded pseudo-random values uniform in `[-m, m)` (64-bit LCG), for cases too large to
/// shrink usefully.
fn seeded(mut s: u64, m: f32) -> impl FnMut() -> f32 {
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 * m - m
    }
}

fn i8_pair() -> impl Strategy<Value = (Vec<i8>, Vec<i8>)> {
    (0usize..=1000).prop_flat_map(|n| (i8s(n), i8s(n)))
}

fn f32_pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (0usize..=700).prop_flat_map(|n| (vec(-10.0f32..10.0, n), vec(-10.0f32..10.0, n)))
}

/// `(x, y0, a)`.
fn axpy_case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, f32)> {
    let xy = (0usize..=300).prop_flat_map(|n| (vec(-10.0f32..10.0, n), vec(-10.0f32..10.0, n)));
    (xy, -3.0f32..3.0).prop_map(|((x, y0), a)| (x, y0, a))
}

/// `(q, y0, a, s)`.
fn axpy_i8_case() -> impl Strategy<Value = (Vec<i8>, Vec<f32>, f32, f32)> {
    let qy = (0usize..=300).prop_flat_map(|n| (i8s(n), vec(-5.0f32..5.0, n)));
    (qy, -2.0f32..2.0, 1e-4f32..0.1).prop_map(|((q, y0), a, s)| (q, y0, a, s))
}

fn gelu_case() -> impl Strategy<Value = Vec<f32>> {
    vec(prop_oneof![-10.0f32..10.0, -1.0f32..1.0], 0..40)
}

fn matmul_f32_case() -> impl Strategy<Value = MatF32Case> {
    let rows = prop_oneof![1usize..=6, 1usize..=30];
    let n = prop_oneof![1usize..=5, 1usize..=20];
    (rows, 1usize..=300, n, any::<u64>()).prop_map(|(rows, cols, n, seed)| {
        let mut next = seeded(seed, 2.0);
        MatF32Case {
            rows,
            cols,
            n,
            w: (0..rows * cols).map(|_| next()).collect(),
            scales: Vec::new(),
            x: (0..n * cols).map(|_| next()).collect(),
            bias: Some((0..rows).map(|_| next()).collect()),
        }
    })
}

fn accumulate_q8_case() -> impl Strategy<Value = AccQ8Case> {
    let cols = prop_oneof![1usize..=40, (1usize..=8).prop_map(|c| c * 16)];
    let k = prop_oneof![0usize..=9, (0usize..=20).prop_map(|k| k * 4)];
    (cols, k, 1usize..=20).prop_flat_map(|(cols, k, n)| {
        let hq = vec(-127i8..=127, n * k);
        let (hs, out0) = (vec(1e-4f32..0.1, n), vec(-5.0f32..5.0, n * cols));
        (i8s(k * cols), hq, hs, out0).prop_map(move |(w, h, hs, out0)| AccQ8Case {
            cols,
            k,
            n,
            w,
            h,
            hs,
            out0,
        })
    })
}

fn quantize_case() -> impl Strategy<Value = Vec<f32>> {
    vec(
        prop_oneof![-1e3f32..1e3, -1.0f32..1.0, Just(0.0f32)],
        0..400,
    )
}

fn accumulate_f32_case() -> impl Strategy<Value = AccF32Case> {
    let cols = prop_oneof![1usize..=40, (1usize..=8).prop_map(|c| c * 16)];
    (cols, 0usize..=70, 1usize..=9).prop_flat_map(|(cols, k, n)| {
        let (w, h) = (vec(-2.0f32..2.0, k * cols), vec(-2.0f32..2.0, n * k));
        (w, h, vec(-5.0f32..5.0, n * cols)).prop_map(move |(w, h, out0)| AccF32Case {
            cols,
            k,
            n,
            w,
            h,
            hs: Vec::new(),
            out0,
        })
    })
}

/// Inputs with a common offset up to 1000, so that the variance cancels badly without the
/// corrected two-pass form: `(x, gamma, beta)`.
fn norm_case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, Vec<f32>)> {
    let xgb = (1usize..=400).prop_flat_map(|n| {
        (
            vec(-10.0f32..10.0, n),
            vec(-2.0f32..2.0, n),
            vec(-1.0f32..1.0, n),
        )
    });
    let offset = prop_oneof![Just(0.0f32), -1000.0f32..1000.0];
    (xgb, offset).prop_map(|((x, g, b), offset)| (x.iter().map(|v| v + offset).collect(), g, b))
}

/// Block-weight cases: every type, columns 32..1536, tokens around the tile and group edges
/// (1, 2, 15, 16, 17, 40), rows around the 8-row tiles, with and without bias.
fn block_case() -> impl Strategy<Value = BlockCase> {
    let cols = prop_oneof![
        (1usize..=48).prop_map(|b| b * 32),
        prop::sample::select(vec![32usize, 64, 96, 384, 576, 1536]),
    ];
    let n = prop::sample::select(vec![1usize, 2, 15, 16, 17, 40]);
    (
        prop::sample::select(BlockType::ALL.to_vec()),
        prop_oneof![1usize..=9, 1usize..=24],
        cols,
        n,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(ty, rows, cols, n, bias, seed)| BlockCase::new(ty, (rows, cols, n), bias, seed))
}

/// Int8 weights with columns a multiple of 32 (the shapes of the row-major int8 kernels).
fn int8_rows_case() -> impl Strategy<Value = Q8Case> {
    let n = prop::sample::select(vec![1usize, 2, 15, 16, 17, 40]);
    (1usize..=20, (1usize..=48).prop_map(|b| b * 32), n)
        .prop_flat_map(|(rows, cols, n)| {
            (
                Just(rows),
                Just(cols),
                Just(n),
                i8s(rows * cols),
                vec(1e-4f32..0.1, rows),
                vec(-50.0f32..50.0, n * cols),
                proptest::option::of(vec(-1.0f32..1.0, rows)),
            )
        })
        .prop_map(|(rows, cols, n, w, scales, x, bias)| Q8Case {
            rows,
            cols,
            n,
            w,
            scales,
            x,
            bias,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    // The engine's product on block weights (the stack path for one token, passes of the
    // planned and of the smallest scratch) gives the generic bits.
    #[test]
    fn fast_matmul_blocks_is_the_generic_product(c in block_case()) {
        topkit_tests::kernel_checks::fast_matmul_blocks(&c, Kernels::Fast);
    }
}

#[test]
fn fast_matmul_blocks_fixed_cases() {
    for c in topkit_tests::kernel_checks::block_cases() {
        topkit_tests::kernel_checks::fast_matmul_blocks(&c, Kernels::Fast);
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx512 {
    use super::*;
    use topkit_tests::kernel_checks::{self as check, Tol};
    use topkit_tests::kernel_test;
    // On a CPU without AVX-512 VNNI the kernels fall back to the generic ones; say so.
    #[test]
    fn reports_whether_the_cpu_has_avx512_vnni() {
        eprintln!(
            "AVX-512 VNNI available: {}",
            kernels::x86_avx512_vnni_available()
        );
    }
    kernel_test!(proptest accumulate_q8_tokens, accumulate_q8_case()
        => check::accumulate_q8_tokens, kernels::x86_avx512_accumulate_q8_tokens);
    kernel_test!(proptest quantize_i8_token, quantize_case()
        => check::quantize_i8_token, kernels::x86_avx512_quantize_i8_token);
    kernel_test!(proptest layer_norm, norm_case()
        => check::layer_norm, kernels::x86_avx512_layer_norm, Tol::Bound);
    kernel_test!(proptest matmul_f32, matmul_f32_case()
        => check::matmul_f32, kernels::x86_avx512_matmul_f32, Tol::Bound);
    kernel_test!(proptest accumulate_f32_tokens, accumulate_f32_case()
        => check::accumulate_f32_tokens, kernels::x86_avx512_accumulate_f32_tokens, Tol::Bound);
    kernel_test!(proptest matmul_q8_blocks, block_case()
        => check::matmul_q8_blocks, kernels::x86_avx512_matmul_q8_rows);
    kernel_test!(#[test] matmul_q8_blocks_fixed, check::block_cases()
        => check::matmul_q8_blocks, kernels::x86_avx512_matmul_q8_rows);
    kernel_test!(proptest matmul_q8_rows_int8, int8_rows_case()
        => check::matmul_q8_tokens, kernels::x86_avx512_matmul_q8_rows);
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx2 {
    use super::*;
    use topkit_tests::kernel_checks::{self as check, Tol};
    use topkit_tests::kernel_test;
    // On a CPU without AVX2/FMA the kernels fall back to the generic ones; say so.
    #[test]
    fn reports_whether_the_cpu_has_avx2() {
        eprintln!("AVX2+FMA available: {}", kernels::x86_avx2_available());
    }
    kernel_test!(proptest dot_i8_i8, i8_pair() => check::dot_i8_i8, kernels::x86_avx2_dot_i8_i8);
    kernel_test!(proptest dot_f32, f32_pair() => check::dot_f32, kernels::x86_avx2_dot_f32, Tol::Bound);
    kernel_test!(proptest axpy_i8, axpy_i8_case() => check::axpy_i8, kernels::x86_avx2_axpy_i8);
    kernel_test!(proptest matmul_f32, matmul_f32_case()
        => check::matmul_f32, kernels::x86_avx2_matmul_f32, Tol::Bound);
    kernel_test!(proptest axpy_f32, axpy_case() => check::axpy_f32, kernels::x86_avx2_axpy_f32, Tol::Bound);
    // GELU within `|x| * 1e-6 + 1e-7` of `activate_fast` (the same formula, a vector exp).
    kernel_test!(proptest gelu_erf, gelu_case() => check::gelu_erf, kernels::x86_avx2_gelu_erf, 1e-6);
    kernel_test!(proptest matmul_q8_blocks, block_case()
        => check::matmul_q8_blocks, kernels::x86_avx2_matmul_q8_rows);
    kernel_test!(#[test] matmul_q8_blocks_fixed, check::block_cases()
        => check::matmul_q8_blocks, kernels::x86_avx2_matmul_q8_rows);
    kernel_test!(proptest matmul_q8_rows_int8, int8_rows_case()
        => check::matmul_q8_tokens, kernels::x86_avx2_matmul_q8_rows);
}
