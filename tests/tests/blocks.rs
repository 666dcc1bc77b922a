//! The reference kernels on ggml block matrices.
//!
//! - f32 activations: a block matrix gives the very bits of its dequantized f32 matrix in
//!   every product (`dot_row`, `matmul`, `axpy_row`, `axpy_col`, `row_to_f32`), because each
//!   tile is dequantized with ggml's arithmetic and then summed in the documented order.
//! - int8 activations ([`kernels::matmul_q8_tokens`]): within the activation rounding of the
//!   exact f64 product, `|got - exact| <= sum_c |w_c| * step_c / 2 + (n + 3) * EPS * sum |w_c x_c|`
//!   where `step_c` is the scale of the activation block that holds column `c`.

use topkit::kernels::{
    self, BLOCK, BlockType, DType, Kernels, Matrix, Q8_BLOCK, Q8Rows, Weights, q8_blocks,
    q8_scratch_bytes,
};
use topkit_tests::kernels_ref::TestMatrix;

const EPS: f64 = f32::EPSILON as f64;

fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

/// The block matrix and its dequantized f32 values.
fn pair(ty: BlockType, rows: usize, cols: usize, seed: u64) -> (TestMatrix, Vec<f32>) {
    let m = TestMatrix::quantize(
        DType::Block(ty),
        rows,
        cols,
        &values(seed, rows * cols, 0.7),
    );
    let deq: Vec<f32> = (0..rows * cols)
        .map(|i| m.get(i / cols, i % cols) as f32)
        .collect();
    (m, deq)
}

const SHAPES: [(usize, usize); 5] = [(1, 32), (3, 64), (5, 160), (7, 384), (2, 576)];

#[test]
fn f32_activation_products_equal_the_dequantized_matrix_bit_for_bit() {
    for ty in BlockType::ALL {
        for (k, &(rows, cols)) in SHAPES.iter().enumerate() {
            let (m, deq) = pair(ty, rows, cols, k as u64 + 1);
            let (wb, wf) = (
                m.matrix(),
                Matrix::new(rows, cols, Weights::F32(&deq)).unwrap(),
            );
            assert_eq!(wb.dtype(), DType::Block(ty));
            for n in [1usize, 3] {
                let x = values(99 + n as u64, n * cols, 1.3);
                let bias = values(7, rows, 0.1);
                let (mut yb, mut yf) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                kernels::matmul(&wb, &x, n, Some(&bias), &mut yb);
                kernels::matmul(&wf, &x, n, Some(&bias), &mut yf);
                assert_eq!(bits(&yb), bits(&yf), "{ty:?} {rows}x{cols} matmul n={n}");
                for r in 0..rows {
                    let xr = &x[..cols];
                    assert_eq!(
                        kernels::dot_row(&wb, r, xr).to_bits(),
                        kernels::dot_row(&wf, r, xr).to_bits(),
                        "{ty:?} dot_row {r}"
                    );
                }
            }
            for r in 0..rows {
                let (mut ob, mut of) = (vec![0f32; cols], vec![0f32; cols]);
                kernels::row_to_f32(&wb, r, &mut ob);
                kernels::row_to_f32(&wf, r, &mut of);
                assert_eq!(bits(&ob), bits(&of), "{ty:?} row_to_f32 {r}");
                let (mut yb, mut yf) = (values(3, cols, 1.0), values(3, cols, 1.0));
                kernels::axpy_row(&wb, r, -0.37, &mut yb);
                kernels::axpy_row(&wf, r, -0.37, &mut yf);
                assert_eq!(bits(&yb), bits(&yf), "{ty:?} axpy_row {r}");
            }
            // A column of W added as the row of W^T would be.
            let mut t = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = deq[r * cols + c];
                }
            }
            let wt = Matrix::new(cols, rows, Weights::F32(&t)).unwrap();
            for j in [0, cols / 2, cols - 1] {
                let (mut yb, mut yt) = (values(5, rows, 1.0), values(5, rows, 1.0));
                kernels::axpy_col(&wb, j, 0.81, &mut yb);
                kernels::axpy_row(&wt, j, 0.81, &mut yt);
                assert_eq!(bits(&yb), bits(&yt), "{ty:?} axpy_col {j}");
            }
        }
    }
}

#[test]
fn int8_activation_products_are_within_the_activation_rounding() {
    for ty in BlockType::ALL {
        for (k, &(rows, cols)) in SHAPES.iter().enumerate() {
            let (m, _) = pair(ty, rows, cols, 40 + k as u64);
            let w = m.matrix();
            let n = 3;
            let x = values(11 + k as u64, n * cols, 2.0);
            let nb = q8_blocks(cols);
            let (mut q, mut s) = (vec![0i8; n * cols], vec![0f32; n * nb]);
            for i in 0..n {
                kernels::quantize_i8_token(
                    &x[i * cols..(i + 1) * cols],
                    &mut q[i * cols..(i + 1) * cols],
                    &mut s[i * nb..(i + 1) * nb],
                );
            }
            let mut y = vec![0f32; n * rows];
            kernels::matmul_q8_tokens(&w, Q8Rows { q: &q, s: &s, n }, None, &mut y);
            // The dispatch (quantize into a planned scratch, then the same product).
            let mut y2 = vec![0f32; n * rows];
            let mut scratch = vec![0f32; q8_scratch_bytes(cols, n) / 4];
            Kernels::Fast.matmul(&w, &x, n, None, &mut y2, &mut scratch);
            for i in 0..n {
                for r in 0..rows {
                    let (mut exact, mut cond, mut round) = (0f64, 0f64, 0f64);
                    for c in 0..cols {
                        let (wc, xc) = (m.get(r, c), x[i * cols + c] as f64);
                        exact += wc * xc;
                        cond += (wc * xc).abs();
                        round += wc.abs() * s[i * nb + c / Q8_BLOCK] as f64 / 2.0;
                    }
                    let got = y[i * rows + r] as f64;
                    let tol = round * 1.0001 + (cols as f64 + 3.0) * EPS * (cond + round) + 1e-30;
                    assert!(
                        (got - exact).abs() <= tol,
                        "{ty:?} {rows}x{cols} token {i} row {r}: {got} vs {exact} (tol {tol})"
                    );
                    let fast = y2[i * rows + r] as f64;
                    assert!((fast - exact).abs() <= tol, "{ty:?} Kernels::Fast.matmul");
                }
            }
        }
    }
}

#[test]
fn block_matrices_refuse_partial_blocks_and_wrong_lengths() {
    let data = vec![0u8; 2 * 18];
    assert!(
        Matrix::new(
            1,
            64,
            Weights::Blocks {
                ty: BlockType::Q4_0,
                data: &data
            }
        )
        .is_ok()
    );
    assert!(
        Matrix::new(
            2,
            32,
            Weights::Blocks {
                ty: BlockType::Q4_0,
                data: &data
            }
        )
        .is_ok()
    );
    assert!(
        Matrix::new(
            1,
            48,
            Weights::Blocks {
                ty: BlockType::Q4_0,
                data: &data
            }
        )
        .is_err()
    );
    assert!(
        Matrix::new(
            1,
            64,
            Weights::Blocks {
                ty: BlockType::Q4_1,
                data: &data
            }
        )
        .is_err()
    );
    assert!(
        Matrix::new(
            3,
            32,
            Weights::Blocks {
                ty: BlockType::Q4_0,
                data: &data
            }
        )
        .is_err()
    );
    assert_eq!(BLOCK, 32);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
