//! Weight matrices: element types and borrowed storage.

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
        }
    }

    /// The storage.
    pub fn weights(&self) -> Weights<'a> {
        self.w
    }

    /// The int8 values and the row scales, `None` for other element types.
    pub fn int8(&self) -> Option<(&'a [i8], &'a [f32])> {
        match self.w {
            Weights::I8 { q, scales } => Some((q, scales)),
            _ => None,
        }
    }
}
