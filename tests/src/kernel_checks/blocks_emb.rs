//! Block weights (`Q4_0` .. `Q8_0`) times int8 activations: always the generic bits (exact i32
//! block dots, the generic float steps in the generic order). The cases are deterministic
//! ([`block_cases`]), for the wasm kernel tests as for any other build.

use super::cases::Rng;
use super::tol::bits;
use topkit::kernels::{self, BLOCK, BlockType, Matrix, Q8Rows, Weights};

/// A block matrix and f32 tokens.
#[derive(Clone, Debug)]
pub struct BlockCase {
    /// Block type of the weights.
    pub ty: BlockType,
    /// Weight rows.
    pub rows: usize,
    /// Weight columns (a multiple of [`BLOCK`]), the token width.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// The blocks, `rows * cols / 32` of them, row by row.
    pub data: Vec<u8>,
    /// Tokens, `n * cols`.
    pub x: Vec<f32>,
    /// Optional bias per row.
    pub bias: Option<Vec<f32>>,
}

impl BlockCase {
    /// The weights as a matrix.
    pub fn matrix(&self) -> Matrix<'_> {
        let w = Weights::Blocks {
            ty: self.ty,
            data: &self.data,
        };
        Matrix::new(self.rows, self.cols, w).unwrap()
    }

    /// The tokens quantized by the generic `quantize_i8_token`: values and block scales.
    pub fn tokens(&self) -> (Vec<i8>, Vec<f32>) {
        let (cols, nb) = (self.cols, kernels::q8_blocks(self.cols));
        let (mut xq, mut xs) = (vec![0i8; self.n * cols], vec![0f32; self.n * nb]);
        for t in 0..self.n {
            kernels::quantize_i8_token(
                &self.x[t * cols..][..cols],
                &mut xq[t * cols..][..cols],
                &mut xs[t * nb..][..nb],
            );
        }
        (xq, xs)
    }

    fn shape(&self) -> String {
        format!(
            "{:?} rows {} cols {} n {} bias {}",
            self.ty,
            self.rows,
            self.cols,
            self.n,
            self.bias.is_some()
        )
    }
}

/// `matmul_q8_tokens` of block weights (the tokens quantized by the generic kernel): `f`
/// gives the generic bits.
pub fn matmul_q8_blocks(
    c: &BlockCase,
    f: impl Fn(&Matrix<'_>, Q8Rows<'_>, Option<&[f32]>, &mut [f32]),
) {
    let (w, (xq, xs)) = (c.matrix(), c.tokens());
    let xt = Q8Rows {
        q: &xq,
        s: &xs,
        n: c.n,
    };
    let mut want = vec![0f32; c.n * c.rows];
    kernels::matmul_q8_tokens(&w, xt, c.bias.as_deref(), &mut want);
    let mut got = vec![f32::NAN; c.n * c.rows];
    f(&w, xt, c.bias.as_deref(), &mut got);
    assert_eq!(bits(&got), bits(&want), "{}", c.shape());
}

/// A whole product of f32 tokens and block weights `f` (e.g. `Kernels::Fast.matmul` with its
/// scratch): the bits of the generic quantization and `matmul_q8_tokens`.
pub fn matmul_blocks_f32_tokens(
    c: &BlockCase,
    f: impl Fn(&Matrix<'_>, &[f32], usize, Option<&[f32]>, &mut [f32]),
) {
    let (w, (xq, xs)) = (c.matrix(), c.tokens());
    let xt = Q8Rows {
        q: &xq,
        s: &xs,
        n: c.n,
    };
    let mut want = vec![0f32; c.n * c.rows];
    kernels::matmul_q8_tokens(&w, xt, c.bias.as_deref(), &mut want);
    let mut got = vec![f32::NAN; c.n * c.rows];
    f(&w, &c.x, c.n, c.bias.as_deref(), &mut got);
    assert_eq!(bits(&got), bits(&want), "{}", c.shape());
}

/// Columns: one block, a block under half an activation block, 3 blocks (an odd last one),
/// the model widths, and the longest row of the int8-activation kernels.
const BLOCK_COLS: &[usize] = &[32, 64, 96, 160, 384, 1536, 4096];

/// `(rows, n)`: rows around the 4-row tiles, tokens around the 16-token passes.
const BLOCK_SHAPES: &[(usize, usize)] =
    &[(1, 1), (3, 2), (4, 1), (5, 3), (9, 16), (7, 17), (2, 33)];

/// Block matrices of every type over [`BLOCK_COLS`] x [`BLOCK_SHAPES`]: weights rounded to
/// nearest from random values, or raw random integers under the rounded scales (every
/// nibble, `-128` for `Q8_0`), or every integer at its extreme; tokens as the int8 cases
/// (runs of zeros, mixed magnitudes); every other case with a bias.
pub fn block_cases(seed: u64) -> impl Iterator<Item = BlockCase> {
    let mut rng = Rng(seed);
    let mut k = 0usize;
    BlockType::ALL.into_iter().flat_map(move |ty| {
        let mut out = Vec::new();
        for &cols in BLOCK_COLS {
            for &(rows, n) in BLOCK_SHAPES {
                if rows * cols * n > 600_000 {
                    continue;
                }
                k += 1;
                let values = rng.f32s(rows * cols, 1.0);
                let bb = ty.block_bytes();
                let mut data = vec![0u8; rows * cols / BLOCK * bb];
                let head = if ty.has_min() { 4 } else { 2 };
                for (v, blk) in values.chunks_exact(BLOCK).zip(data.chunks_exact_mut(bb)) {
                    ty.quantize(v, blk);
                    match k % 3 {
                        1 => blk[head..].iter_mut().for_each(|b| *b = rng.u32() as u8),
                        2 => blk[head..].fill(if k.is_multiple_of(2) { 0x80 } else { 0xff }),
                        _ => {}
                    }
                }
                let x = rng.activations(n * cols);
                let bias = k.is_multiple_of(2).then(|| rng.f32s(rows, 1.0));
                out.push(BlockCase {
                    ty,
                    rows,
                    cols,
                    n,
                    data,
                    x,
                    bias,
                });
            }
        }
        out
    })
}
