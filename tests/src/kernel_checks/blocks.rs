//! Block-weight products with int8 activations ([`BlockType`] weights, row-major int8
//! tokens): always the generic bits (exact i32 block dots, the generic float order per
//! output).

use super::cases::Rng;
use super::tol::bits;
use topkit::kernels::{self, BLOCK, BlockType, Kernels, Matrix, Q8Rows, Weights};

/// A block matrix of `rows x cols` (`cols` a multiple of 32) and `n` f32 tokens.
#[derive(Clone, Debug)]
pub struct BlockCase {
    /// The block type.
    pub ty: BlockType,
    /// Weight rows.
    pub rows: usize,
    /// Weight columns (a multiple of [`BLOCK`]), the token width.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// The blocks, row-major.
    pub data: Vec<u8>,
    /// Tokens, `n * cols`.
    pub x: Vec<f32>,
    /// Optional bias per row.
    pub bias: Option<Vec<f32>>,
}

impl BlockCase {
    /// A case from `seed`: weights of mixed magnitude quantized by [`BlockType::quantize`],
    /// then every fourth block's integers replaced by random bytes (the whole stored range,
    /// `Q8_0`'s -128 included; the f16 scales stay finite), activations with runs of zeros.
    pub fn new(
        ty: BlockType,
        (rows, cols, n): (usize, usize, usize),
        bias: bool,
        seed: u64,
    ) -> Self {
        assert!(cols.is_multiple_of(BLOCK));
        let mut rng = Rng(seed);
        let bb = ty.block_bytes();
        let mut data = vec![0u8; rows * cols / BLOCK * bb];
        for blk in data.chunks_exact_mut(bb) {
            let m = [1e-3, 0.1, 2.0][rng.u32() as usize % 3];
            let w = rng.f32s(BLOCK, m);
            ty.quantize(&w, blk);
            if rng.u32().is_multiple_of(4) {
                let at = if ty.has_min() { 4 } else { 2 };
                for b in &mut blk[at..] {
                    *b = rng.u32() as u8;
                }
            }
        }
        let x = rng.activations(n * cols);
        let bias = bias.then(|| rng.f32s(rows, 1.0));
        BlockCase {
            ty,
            rows,
            cols,
            n,
            data,
            x,
            bias,
        }
    }

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
            "{} rows {} cols {} n {} bias {}",
            self.ty.name(),
            self.rows,
            self.cols,
            self.n,
            self.bias.is_some()
        )
    }
}

/// `matmul_q8_tokens` of block weights and row-major tokens: `f` gives the generic bits.
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

/// The engine's product `kernels.matmul` on block weights, with the planned scratch and with
/// the smallest one (one group of tokens per pass): the generic kernels' bits (the tokens
/// quantized by `quantize_i8_token`, then `matmul_q8_tokens`).
pub fn fast_matmul_blocks(c: &BlockCase, kernels: Kernels) {
    let (w, (xq, xs)) = (c.matrix(), c.tokens());
    let xt = Q8Rows {
        q: &xq,
        s: &xs,
        n: c.n,
    };
    let mut want = vec![0f32; c.n * c.rows];
    kernels::matmul_q8_tokens(&w, xt, c.bias.as_deref(), &mut want);
    for words in [
        kernels::q8_scratch_bytes(c.cols, c.n) / 4,
        kernels::q8_group_words(c.cols),
    ] {
        let mut scratch = vec![0f32; words];
        let mut got = vec![f32::NAN; c.n * c.rows];
        kernels.matmul(&w, &c.x, c.n, c.bias.as_deref(), &mut got, &mut scratch);
        assert_eq!(bits(&got), bits(&want), "{} scratch {words}", c.shape());
    }
}

/// Deterministic cases: every block type, columns 32..1536 (one block, blocks of 64 with and
/// without a half block, the models' widths), tokens around the tile and group edges, rows
/// around the 8-row tiles, with and without bias.
pub fn block_cases() -> impl Iterator<Item = BlockCase> {
    let shapes = [
        (1, 32, 1),
        (3, 64, 2),
        (8, 96, 15),
        (9, 384, 16),
        (17, 576, 17),
        (5, 1536, 40),
        (24, 160, 1),
        (7, 32, 40),
    ];
    BlockType::ALL.into_iter().flat_map(move |ty| {
        shapes.into_iter().enumerate().map(move |(i, s)| {
            let seed = 0xb10c_0000 + 16 * i as u64 + ty.ggml_code() as u64;
            BlockCase::new(ty, s, i % 2 == 0, seed)
        })
    })
}
