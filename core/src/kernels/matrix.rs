//! Weight matrices: element types and borrowed storage.

use super::blocks::BlockType;
use crate::Error;
/// IEEE half float, the element of [`Weights::F16`] (re-exported from the `half` crate).
pub use half::f16;

/// Element type of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half).
    F16,
    /// Symmetric int8 with one f32 scale per row: `w[r][c] = scale[r] * q[r][c]`.
    I8,
    /// ggml blocks of 32 weights along each row ([`BlockType`]).
    Block(BlockType),
}

impl DType {
    /// The name `--dtype` takes and `inspect` prints: `f32`, `f16`, `int8`, `q4_0`, ...
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "int8",
            DType::Block(t) => t.name(),
        }
    }

    /// The block type, `None` for f32, f16 and int8.
    pub const fn block(self) -> Option<BlockType> {
        match self {
            DType::Block(t) => Some(t),
            _ => None,
        }
    }
}

/// Borrowed weight storage (zero-copy view of flash, a file or a JS buffer).
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// Row-major f32 values.
    F32(&'a [f32]),
    /// Row-major f16 values.
    F16(&'a [f16]),
    /// Row-major int8 values and one f32 scale per row.
    I8 {
        /// Quantized values, `rows * cols`.
        q: &'a [i8],
        /// One scale per row.
        scales: &'a [f32],
    },
    /// ggml blocks: each row is `cols / 32` blocks of `ty.block_bytes()` bytes.
    Blocks {
        /// The block type.
        ty: BlockType,
        /// The blocks, row-major.
        data: &'a [u8],
    },
}

/// A row-major `rows x cols` weight matrix. For a linear layer `y = W x` (PyTorch layout:
/// `[out, in]`) rows are outputs.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    rows: usize,
    cols: usize,
    w: Weights<'a>,
}

impl<'a> Matrix<'a> {
    /// Checks that the storage holds exactly `rows * cols` values (and `rows` scales).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `rows * cols` overflows, [`Error::ShapeMismatch`] for
    /// storage of another length.
    pub fn new(rows: usize, cols: usize, w: Weights<'a>) -> Result<Self, Error> {
        let n = rows
            .checked_mul(cols)
            .ok_or(Error::InvalidConfig("matrix too large"))?;
        let (len, what) = match w {
            Weights::F32(d) => (d.len(), "f32 matrix"),
            Weights::F16(d) => (d.len(), "f16 matrix"),
            Weights::I8 { q, scales } => {
                if scales.len() != rows {
                    return Err(Error::ShapeMismatch {
                        what: "int8 row scales",
                        expected: rows,
                        found: scales.len(),
                    });
                }
                (q.len(), "int8 matrix")
            }
            Weights::Blocks { ty, data } => {
                let want = ty.matrix_bytes(rows, cols).ok_or(Error::InvalidConfig(
                    "block matrix columns are not whole blocks",
                ))?;
                if data.len() != want {
                    return Err(Error::ShapeMismatch {
                        what: "block matrix bytes",
                        expected: want,
                        found: data.len(),
                    });
                }
                return Ok(Matrix { rows, cols, w });
            }
        };
        if len != n {
            return Err(Error::ShapeMismatch {
                what,
                expected: n,
                found: len,
            });
        }
        Ok(Matrix { rows, cols, w })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self.w {
            Weights::F32(_) => DType::F32,
            Weights::F16(_) => DType::F16,
            Weights::I8 { .. } => DType::I8,
            Weights::Blocks { ty, .. } => DType::Block(ty),
        }
    }

    /// The storage.
    pub fn weights(&self) -> Weights<'a> {
        self.w
    }

    /// Bytes of the weights (and int8 row scales): what the matrix takes in flash.
    pub fn bytes(&self) -> usize {
        match self.w {
            Weights::F32(d) => 4 * d.len(),
            Weights::F16(d) => 2 * d.len(),
            Weights::I8 { q, scales } => q.len() + 4 * scales.len(),
            Weights::Blocks { data, .. } => data.len(),
        }
    }

    /// The block type and the blocks of row `r` (< rows), `None` for other element types.
    #[inline]
    pub fn block_row(&self, r: usize) -> Option<(BlockType, &'a [u8])> {
        match self.w {
            Weights::Blocks { ty, data } => {
                let rb = self.cols / super::blocks::BLOCK * ty.block_bytes();
                Some((ty, &data[r * rb..(r + 1) * rb]))
            }
            _ => None,
        }
    }

    /// The int8 values and the row scales, `None` for other element types.
    pub fn int8(&self) -> Option<(&'a [i8], &'a [f32])> {
        match self.w {
            Weights::I8 { q, scales } => Some((q, scales)),
            _ => None,
        }
    }
}
