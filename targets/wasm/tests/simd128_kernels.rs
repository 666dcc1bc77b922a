//! The core's wasm `simd128` kernels against the generic ones, run in node by
//! `wasm-bindgen-test-runner` (`cargo xtask test-wasm`, simd128 build only): the checks of
//! tests/src/kernel_checks/ (shared with the host's x86-64 tests) over its deterministic
//! cases (shapes around the tile and block edges, the fallbacks included). The integer
//! products (int8 and block weights), the quantization and the fused feed-forward must give
//! the generic bits (the design promises it: exact i32 sums, the same float epilogue), the
//! vector `exp` the bits of `exp_poly`, the attention tiles the generic bits (the same float
//! operations in the same order, lane by lane), and GELU stays within `|x| * 3e-7 + 1e-7` of
//! `activate_fast` (its `exp` is the polynomial, not the math library's).
#![cfg(all(target_arch = "wasm32", target_feature = "simd128"))]

// The checks of every kernel family and their re-exports; this build uses those it has
// kernels for.
#[allow(dead_code, unused_imports)]
#[path = "../../../tests/src/kernel_checks/mod.rs"]
mod kernel_checks;

use core::arch::wasm32::{f32x4, f32x4_extract_lane};
use kernel_checks::{self as check, Tol, cases};
use topkit::kernels::{self, attention as attn};
use wasm_bindgen_test::wasm_bindgen_test;

/// `exp_poly` on 4 lanes over a slice, the tail padded with zeros.
fn exp_lanes(x: &mut [f32]) {
    for c in x.chunks_mut(4) {
        let a = [0, 1, 2, 3].map(|i| c.get(i).copied().unwrap_or(0.0));
        let v = kernels::wasm_simd128_exp_f32x4(f32x4(a[0], a[1], a[2], a[3]));
        let got = [
            f32x4_extract_lane::<0>(v),
            f32x4_extract_lane::<1>(v),
            f32x4_extract_lane::<2>(v),
            f32x4_extract_lane::<3>(v),
        ];
        c.copy_from_slice(&got[..c.len()]);
    }
}

/// `Kernels::Fast.matmul` with the scratch the engine plans (`q8_scratch_bytes`): on block
/// weights it quantizes the tokens and runs the simd128 block product.
fn fast_matmul(w: &kernels::Matrix<'_>, x: &[f32], n: usize, b: Option<&[f32]>, y: &mut [f32]) {
    let mut scratch = vec![0f32; kernels::q8_scratch_bytes(w.cols(), n) / 4];
    kernels::Kernels::Fast.matmul(w, x, n, b, y, &mut scratch);
}

/// The shapes the fused feed-forward takes: `d_ff` a multiple of 64, `d` up to 1024.
fn ffn_q8_fits(d: usize, d_ff: usize) -> bool {
    d_ff.is_multiple_of(64) && d <= 1024
}

kernel_test!(#[wasm_bindgen_test] matmul_q8_tokens,
    cases::q8(1, &[(1, 1), (3, 2), (4, 3), (5, 5), (9, 16), (40, 17), (6, 40), (3, 300)], true)
    => check::matmul_q8_tokens, kernels::wasm_simd128_matmul_q8_tokens);
kernel_test!(#[wasm_bindgen_test] matmul_i8_i8_token,
    cases::q8(2, &[(2, 1), (7, 3), (12, 33), (3, 270)], false)
    => check::matmul_i8_i8_token, kernels::wasm_simd128_matmul_i8_i8_token);
kernel_test!(#[wasm_bindgen_test] matmul_q8_blocks, check::blocks_emb::block_cases(4)
    => check::blocks_emb::matmul_q8_blocks, kernels::wasm_simd128_matmul_q8_blocks);
kernel_test!(#[wasm_bindgen_test] fast_matmul_blocks, check::blocks_emb::block_cases(5)
    => check::blocks_emb::matmul_blocks_f32_tokens, fast_matmul);
kernel_test!(#[wasm_bindgen_test] accumulate_q8_tokens, cases::accumulate_q8()
    => check::accumulate_q8_tokens, kernels::wasm_simd128_accumulate_q8_tokens);
kernel_test!(#[wasm_bindgen_test] quantize_i8_token, cases::quantize()
    => check::quantize_i8_token, kernels::wasm_simd128_quantize_i8_token);
kernel_test!(#[wasm_bindgen_test] ffn_q8, cases::ffn_q8()
    => check::ffn_q8, kernels::wasm_simd128_ffn_q8, ffn_q8_fits);
kernel_test!(#[wasm_bindgen_test] exp_f32x4, cases::exp() => check::exp, exp_lanes, Tol::Bits);
kernel_test!(#[wasm_bindgen_test] attn_scores_tile, cases::scores_tile()
    => check::attn_scores_tile, kernels::wasm_simd128_attn_scores_tile, Tol::Bits);
kernel_test!(#[wasm_bindgen_test] attn_dense_tile, cases::dense_tile()
    => check::attn_dense_tile, kernels::wasm_simd128_attn_dense_tile, Tol::Bits);
kernel_test!(#[wasm_bindgen_test] attn_scores_rows, cases::scores_rows()
    => check::attn_scores_rows, kernels::wasm_simd128_attn_scores_rows,
    kernels::wasm_simd128_attn_scores_tile, Tol::Bits);
// No simd128 softmax of one row: the generic one gives each lane's bits.
kernel_test!(#[wasm_bindgen_test] attn_softmax_lanes, cases::softmax_lanes()
    => check::attn_softmax_lanes, kernels::wasm_simd128_attn_softmax_lanes,
    attn::attn_softmax_rows, Tol::Bits);
kernel_test!(#[wasm_bindgen_test] attn_topk_block, cases::topk_block()
    => check::attn_topk_block, kernels::wasm_simd128_attn_topk_block);

/// GELU within `|x| * 3e-7 + 1e-7` of `activate_fast`; prints the worst error seen.
#[wasm_bindgen_test]
fn gelu_erf() {
    let worst = cases::gelu()
        .map(|x| check::gelu_erf(&x, kernels::wasm_simd128_gelu_erf, 3e-7))
        .fold(0f32, f32::max);
    wasm_bindgen_test::console_log!("gelu: worst |err| / (|x| + 1) = {worst:e}");
}
