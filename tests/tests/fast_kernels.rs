//! The int8-activation kernels and the arch kernels of the host fast path.
//!
//! - Generic int8 kernels against exact references: `dot_i8_i8` equals the i64 sum;
//!   `quantize_i8` rounds to nearest (error at most `scale / 2` per element, `|q| <= 127`);
//!   `matmul_i8_i8_token` equals, bit for bit, the documented formula over the input quantized
//!   in blocks of `Q8_BLOCK`, and is within half a block step per element of the f32 product;
//!   `accumulate_q8_tokens` is the exact i32 sum times the token's scale, added to `out`.
//! - The engine's int8 product (`Kernels::Fast.matmul` on the planned scratch, and
//!   the quantize-once pass `Kernels::quantize_q8` + `Kernels::matmul_q8`) gives the generic bits with
//!   whatever kernels this target runs (AVX-512 VNNI packing on x86-64), with the plan's
//!   scratch and with the smallest one (one group of tokens per pass).
//! - Arch kernels against the generic ones, one macro per op, instantiated for every arch
//!   module this build has (x86-64 AVX2/FMA in std builds): integer ops and the no-FMA axpy
//!   must be bit-identical; the FMA f32 dot within `(n + 3) * EPS * sum|a_i b_i|` of the
//!   generic one (both are within `n * EPS * sum|a_i b_i|` of the exact value).

// The arch macros are instantiated only in builds that have an arch module.
#![cfg_attr(
    not(all(feature = "std", target_arch = "x86_64")),
    allow(unused_macros)
)]

use proptest::collection::vec;
use proptest::prelude::*;
use topkit::kernels::{self, Kernels, Matrix, Q8Rows, Weights};

/// An arena of `bytes` bytes (16-byte aligned).
fn arena_mem(bytes: usize) -> Vec<u128> {
    vec![0u128; bytes.div_ceil(16)]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn i8s(n: usize) -> impl Strategy<Value = Vec<i8>> {
    vec(any::<i8>(), n)
}

/// Rows, cols, inputs n, int8 weights, row scales, f32 inputs, optional bias.
type MatCase = (
    usize,
    usize,
    usize,
    Vec<i8>,
    Vec<f32>,
    Vec<f32>,
    Option<Vec<f32>>,
);

fn token_case() -> impl Strategy<Value = MatCase> {
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
}

proptest! {
    #[test]
    fn matmul_i8_i8_token_is_the_documented_formula((rows, cols, n, q, scales, x, bias) in token_case()) {
        let w = Matrix::new(rows, cols, Weights::I8 { q: &q, scales: &scales }).unwrap();
        let mut y = vec![0f32; n * rows];
        kernels::matmul_i8_i8_token(&w, &x, n, bias.as_deref(), &mut y);
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
                if let Some(b) = &bias {
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
    fn dot_i8_i8_is_exact((a, b) in (0usize..=1000).prop_flat_map(|n| (i8s(n), i8s(n)))) {
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
            // Half a step, plus the rounding of v / s in f32.
            let err = (v as f64 - s as f64 * qi as f64).abs();
            prop_assert!(err <= 0.5 * s as f64 * (1.0 + 1e-5) + 1e-30, "{} -> {} * {}", v, qi, s);
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
    fn fast_matmul_by_is_the_generic_product((rows, cols, n, q, scales, x, bias) in token_case()) {
        let w = Matrix::new(rows, cols, Weights::I8 { q: &q, scales: &scales }).unwrap();
        let mut want = vec![0f32; n * rows];
        kernels::matmul_i8_i8_token(&w, &x, n, bias.as_deref(), &mut want);
        let words = kernels::q8_scratch_bytes(cols, n) / 4;
        prop_assert!(words >= kernels::q8_group_words(cols));
        for scratch_words in [words, kernels::q8_group_words(cols)] {
            let mut scratch = vec![f32::NAN; scratch_words];
            let mut got = vec![f32::NAN; n * rows];
            Kernels::Fast.matmul(&w, &x, n, bias.as_deref(), &mut got, &mut scratch);
            prop_assert_eq!(bits(&got), bits(&want), "{} words", scratch_words);
        }
    }

    /// The quantize-once pass: the tokens quantized by `Kernels::Fast.quantize_q8` (packed for the
    /// AVX-512 kernels on x86-64), multiplied by `Kernels::Fast.matmul_q8`, give the bits of the
    /// generic `matmul_q8_tokens` of the generic `quantize_i8_token`, for two matrices of one
    /// pass (as the feed-forward uses it).
    #[test]
    fn fast_q8_pass_is_the_generic_product((rows, cols, n, q, scales, x, bias) in token_case()) {
        let n = n.min(16);
        let x = &x[..n * cols];
        let w = Matrix::new(rows, cols, Weights::I8 { q: &q, scales: &scales }).unwrap();
        let nb = kernels::q8_blocks(cols);
        let (mut xq, mut xs) = (vec![0i8; n * cols], vec![0f32; n * nb]);
        for t in 0..n {
            kernels::quantize_i8_token(&x[t * cols..(t + 1) * cols], &mut xq[t * cols..(t + 1) * cols], &mut xs[t * nb..(t + 1) * nb]);
        }
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

/// Rows `d_ff`, width `d`, tokens `n`, up weights, up scales, up bias, down_t weights, down
/// scales, down bias, input, activation.
type FfnCase = (
    usize,
    usize,
    usize,
    (Vec<i8>, Vec<f32>, Option<Vec<f32>>),
    (Vec<i8>, Vec<f32>, Option<Vec<f32>>),
    Vec<f32>,
    topkit::Activation,
);

fn ffn_case() -> impl Strategy<Value = FfnCase> {
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
        (
            Just(d_ff),
            Just(d),
            Just(n),
            side(d_ff, d_ff),
            side(d_ff, d),
            vec(-3.0f32..3.0, n * d),
            Just(act),
        )
    })
}

proptest! {
    /// The dense int8 feed-forward with the fast kernels (fused on AVX-512 where the CPU and
    /// the shapes allow) gives the bits of the unfused fast kernels: the up projection per
    /// token, the activation, each unit times its `down_t` row scale, one int8 scale per token
    /// and 64 units, exact down-projection sums.
    #[test]
    fn fast_ffn_q8_is_the_unfused_kernels((d_ff, d, n, (uq, us, ub), (dq, ds, db), x, act) in ffn_case()) {
        use topkit::ffn::{FfnScratch, FfnWeights, ffn_with};
        let up = Matrix::new(d_ff, d, Weights::I8 { q: &uq, scales: &us }).unwrap();
        let down_t = Matrix::new(d_ff, d, Weights::I8 { q: &dq, scales: &ds }).unwrap();
        let w = FfnWeights { up, up_bias: ub.as_deref(), gate: None, down_t, down_bias: db.as_deref(), act };
        let mut mem = arena_mem(topkit::ffn::fast_scratch_bytes(d, d_ff, n, false));
        let mut arena = topkit::Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
        let mut s = FfnScratch::new_fast(&mut arena, d, d_ff, n, None, false).unwrap();
        let mut got = vec![f32::NAN; n * d];
        ffn_with(Kernels::Fast, &w, &x, None, &mut s, &mut got).unwrap();

        let nb = kernels::q8_blocks(d);
        let mut want = vec![0f32; n * d];
        for t in 0..n {
            let (xt, ot) = (&x[t * d..(t + 1) * d], &mut want[t * d..(t + 1) * d]);
            if let Some(b) = &db {
                ot.copy_from_slice(b);
            }
            let (mut xq, mut xs) = (vec![0i8; d], vec![0f32; nb]);
            kernels::quantize_i8_token(xt, &mut xq, &mut xs);
            let mut h = vec![0f32; d_ff];
            kernels::matmul_q8_tokens(&up, Q8Rows { q: &xq, s: &xs, n: 1 }, ub.as_deref(), &mut h);
            Kernels::Fast.activate_slice(act, &mut h);
            for (j0, hb) in h.chunks_mut(kernels::Q8_BLOCK).enumerate() {
                let j0 = j0 * kernels::Q8_BLOCK;
                for (v, &sc) in hb.iter_mut().zip(&ds[j0..]) {
                    *v *= sc;
                }
                let (mut hq, mut hs) = (vec![0i8; hb.len()], [0f32]);
                kernels::quantize_i8_token(hb, &mut hq, &mut hs);
                kernels::accumulate_q8_tokens(ot, &dq[j0 * d..(j0 + hb.len()) * d], d, Q8Rows { q: &hq, s: &hs, n: 1 });
            }
        }
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
        let mut s = seed;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 };
        let uw: Vec<f32> = (0..d_ff * d).map(|_| next() * 0.2).collect();
        let dw: Vec<f32> = (0..d_ff * d).map(|_| next() * 0.2).collect();
        let ub: Vec<f32> = (0..d_ff).map(|_| next()).collect();
        let db: Vec<f32> = (0..d).map(|_| next()).collect();
        let x: Vec<f32> = (0..n * d).map(|_| next() * 3.0).collect();
        let up = Matrix::new(d_ff, d, Weights::F32(&uw)).unwrap();
        let down_t = Matrix::new(d_ff, d, Weights::F32(&dw)).unwrap();
        let w = FfnWeights { up, up_bias: Some(&ub), gate: None, down_t, down_bias: Some(&db), act: topkit::Activation::GeluErf };
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

/// f32 axpy: the arch kernel `$f` (fused) is within 1 ulp of `|a x_i| + |y_i|` of the generic
/// `axpy` per element.
macro_rules! test_axpy_f32 {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((x, y0) in (0usize..=300).prop_flat_map(|n| (vec(-10.0f32..10.0, n), vec(-10.0f32..10.0, n))), a in -3.0f32..3.0) {
                let mut want = y0.clone();
                kernels::axpy(&mut want, a, &x);
                let mut got = y0.clone();
                $f(&mut got, a, &x);
                for i in 0..x.len() {
                    let tol = f32::EPSILON as f64 * ((a * x[i]).abs() + y0[i].abs()) as f64 * 2.0;
                    prop_assert!((got[i] as f64 - want[i] as f64).abs() <= tol, "{} vs {}", got[i], want[i]);
                }
            }
        }
    };
}

/// GELU (erf form) over a slice: the arch kernel `$f` is within `|x| * 1e-6 + 1e-7` of
/// `activate_fast` (the same formula with a vector exp).
macro_rules! test_gelu_erf {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(x in vec(prop_oneof![-10.0f32..10.0, -1.0f32..1.0], 0..40)) {
                let mut got = x.clone();
                $f(&mut got);
                for (&v, &g) in x.iter().zip(&got) {
                    let want = kernels::activate_fast(topkit::Activation::GeluErf, v);
                    prop_assert!((g - want).abs() <= v.abs() * 1e-6 + 1e-7, "gelu({}) = {} vs {}", v, g, want);
                }
            }
        }
    };
}

/// `dot_i8_i8`: the arch kernel `$f` returns the generic (exact) value.
macro_rules! test_dot_i8_i8 {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((a, b) in (0usize..=1000).prop_flat_map(|n| (i8s(n), i8s(n)))) {
                prop_assert_eq!($f(&a, &b), kernels::dot_i8_i8(&a, &b));
            }
        }
    };
}

/// f32 dot: the arch kernel `$f` is within `(n + 3) * EPS * sum|a_i b_i|` of the generic one.
macro_rules! test_dot_f32 {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((a, b) in (0usize..=700).prop_flat_map(|n| (vec(-10.0f32..10.0, n), vec(-10.0f32..10.0, n)))) {
                let got = $f(&a, &b);
                let want = kernels::dot(&a, &b);
                let scale: f64 = a.iter().zip(&b).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
                let tol = (a.len() as f64 + 3.0) * f32::EPSILON as f64 * scale + 1e-30;
                prop_assert!((got as f64 - want as f64).abs() <= tol, "{} vs {} (tol {:e})", got, want, tol);
            }
        }
    };
}

/// int8 axpy: the arch kernel `$f` gives the bits of the generic int8 `axpy_row`.
macro_rules! test_axpy_i8 {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((q, y0) in (0usize..=300).prop_flat_map(|n| (i8s(n), vec(-5.0f32..5.0, n))), a in -2.0f32..2.0, s in 1e-4f32..0.1) {
                let n = q.len();
                let scales = [s];
                let w = Matrix::new(1, n, Weights::I8 { q: &q, scales: &scales }).unwrap();
                let mut want = y0.clone();
                kernels::axpy_row(&w, 0, a, &mut want);
                let mut got = y0.clone();
                $f(&mut got, a * s, &q);
                prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
    };
}

/// f32 matmul: the arch kernel `$f` is within the dot tolerance of the generic `matmul`
/// (bias added after the sum in both).
macro_rules! test_matmul_f32 {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((rows, cols, n) in (prop_oneof![1usize..=6, 1usize..=30], 1usize..=300, prop_oneof![1usize..=5, 1usize..=20]), seed in any::<u64>()) {
                let mut s = seed;
                let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
                let wv: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
                let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
                let bias: Vec<f32> = (0..rows).map(|_| next()).collect();
                let w = Matrix::new(rows, cols, Weights::F32(&wv)).unwrap();
                let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                kernels::matmul(&w, &x, n, Some(&bias), &mut want);
                $f(&w, &x, n, Some(&bias), &mut got);
                for i in 0..n {
                    for r in 0..rows {
                        let scale: f64 = (0..cols).map(|c| (wv[r * cols + c] as f64 * x[i * cols + c] as f64).abs()).sum::<f64>() + bias[r].abs() as f64;
                        let tol = (cols as f64 + 4.0) * f32::EPSILON as f64 * scale + 1e-30;
                        let (g, w) = (got[i * rows + r], want[i * rows + r]);
                        prop_assert!((g as f64 - w as f64).abs() <= tol, "{} vs {} (tol {:e})", g, w, tol);
                    }
                }
            }
        }
    };
}

/// Down projection of per-token int8 rows: the arch kernel `$f` gives the bits of the generic
/// `accumulate_q8_tokens`.
macro_rules! test_accumulate_q8_tokens {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((cols, k, n, q, hq, hs, out0) in (prop_oneof![1usize..=40, (1usize..=8).prop_map(|c| c * 16)], prop_oneof![0usize..=9, (0usize..=20).prop_map(|k| k * 4)], 1usize..=20).prop_flat_map(|(c, k, n)| (Just(c), Just(k), Just(n), i8s(k * c), vec(-127i8..=127, n * k), vec(1e-4f32..0.1, n), vec(-5.0f32..5.0, n * c)))) {
                let _ = k;
                let mut want = out0.clone();
                kernels::accumulate_q8_tokens(&mut want, &q, cols, Q8Rows { q: &hq, s: &hs, n });
                let mut got = out0.clone();
                $f(&mut got, &q, cols, Q8Rows { q: &hq, s: &hs, n });
                prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
    };
}

/// Per-token block quantization: the arch kernel `$f` gives the bits of the generic
/// `quantize_i8_token`.
macro_rules! test_quantize_i8_token {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(x in vec(prop_oneof![-1e3f32..1e3, -1.0f32..1.0, Just(0.0f32)], 0..400)) {
                let nb = kernels::q8_blocks(x.len());
                let (mut qw, mut sw) = (vec![0i8; x.len()], vec![0f32; nb]);
                kernels::quantize_i8_token(&x, &mut qw, &mut sw);
                let (mut qg, mut sg) = (vec![0i8; x.len()], vec![0f32; nb]);
                $f(&x, &mut qg, &mut sg);
                prop_assert_eq!(qg, qw);
                prop_assert_eq!(sg.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), sw.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
    };
}

/// f32 down projection of tokens: the arch kernel `$f` is within the dot tolerance of the
/// generic `accumulate_f32_tokens` per element.
macro_rules! test_accumulate_f32_tokens {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((cols, k, n, w, h, out0) in (prop_oneof![1usize..=40, (1usize..=8).prop_map(|c| c * 16)], 0usize..=70, 1usize..=9).prop_flat_map(|(c, k, n)| (Just(c), Just(k), Just(n), vec(-2.0f32..2.0, k * c), vec(-2.0f32..2.0, n * k), vec(-5.0f32..5.0, n * c)))) {
                let mut want = out0.clone();
                kernels::accumulate_f32_tokens(&mut want, &w, cols, &h, n);
                let mut got = out0.clone();
                $f(&mut got, &w, cols, &h, n);
                for t in 0..n {
                    for c in 0..cols {
                        let scale: f64 = (0..k).map(|j| (h[t * k + j] as f64 * w[j * cols + c] as f64).abs()).sum::<f64>() + out0[t * cols + c].abs() as f64;
                        let tol = 2.0 * (k as f64 + 3.0) * f32::EPSILON as f64 * scale + 1e-30;
                        let (g, e) = (got[t * cols + c], want[t * cols + c]);
                        prop_assert!((g as f64 - e as f64).abs() <= tol, "{} vs {} (tol {:e})", g, e, tol);
                    }
                }
            }
        }
    };
}

/// LayerNorm: the arch kernel `$f` (another summation order, fused affine step) is within
/// `1e-4 * |gamma| * (1 + |z|) + 1e-6 * (1 + |beta|)` of the generic one per element, `z`
/// the standardized input (inputs with a common offset up to 1000, so that the variance
/// cancels badly without the corrected two-pass form).
macro_rules! test_layer_norm {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name((x, g, b) in (1usize..=400).prop_flat_map(|n| (vec(-10.0f32..10.0, n), vec(-2.0f32..2.0, n), vec(-1.0f32..1.0, n))), offset in prop_oneof![Just(0.0f32), -1000.0f32..1000.0]) {
                let x: Vec<f32> = x.iter().map(|v| v + offset).collect();
                let mut want = x.clone();
                kernels::layer_norm(&mut want, &g, &b, 1e-12);
                let mut got = x.clone();
                $f(&mut got, &g, &b, 1e-12);
                let n = x.len() as f64;
                let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
                let sd = (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt().max(1e-30);
                for i in 0..x.len() {
                    let z = (x[i] as f64 - m) / sd;
                    let tol = 1e-4 * (g[i].abs() as f64) * (1.0 + z.abs()) + 1e-6 * (1.0 + b[i].abs() as f64);
                    prop_assert!((got[i] as f64 - want[i] as f64).abs() <= tol, "{}: {} vs {} (tol {:e})", i, got[i], want[i], tol);
                }
            }
        }
    };
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx512 {
    use super::*;
    // On a CPU without AVX-512 VNNI the kernels fall back to the generic ones; say so.
    #[test]
    fn reports_whether_the_cpu_has_avx512_vnni() {
        eprintln!(
            "AVX-512 VNNI available: {}",
            kernels::x86_avx512_vnni_available()
        );
    }
    test_accumulate_q8_tokens!(
        accumulate_q8_tokens,
        kernels::x86_avx512_accumulate_q8_tokens
    );
    test_quantize_i8_token!(quantize_i8_token, kernels::x86_avx512_quantize_i8_token);
    test_layer_norm!(layer_norm, kernels::x86_avx512_layer_norm);
    test_matmul_f32!(matmul_f32, kernels::x86_avx512_matmul_f32);
    test_accumulate_f32_tokens!(
        accumulate_f32_tokens,
        kernels::x86_avx512_accumulate_f32_tokens
    );
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx2 {
    use super::*;
    // On a CPU without AVX2/FMA the kernels fall back to the generic ones; say so.
    #[test]
    fn reports_whether_the_cpu_has_avx2() {
        eprintln!("AVX2+FMA available: {}", kernels::x86_avx2_available());
    }
    test_dot_i8_i8!(dot_i8_i8, kernels::x86_avx2_dot_i8_i8);
    test_dot_f32!(dot_f32, kernels::x86_avx2_dot_f32);
    test_axpy_i8!(axpy_i8, kernels::x86_avx2_axpy_i8);
    test_matmul_f32!(matmul_f32, kernels::x86_avx2_matmul_f32);
    test_axpy_f32!(axpy_f32, kernels::x86_avx2_axpy_f32);
    test_gelu_erf!(gelu_erf, kernels::x86_avx2_gelu_erf);
}
