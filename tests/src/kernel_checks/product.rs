//! The cases of the matrix products, int8 or f32.

/// A matrix of `T` (`rows x cols`, one scale per row for int8) and `n` f32 tokens of `cols`.
#[derive(Clone, Debug)]
pub struct MatCase<T> {
    /// Weight rows.
    pub rows: usize,
    /// Weight columns, the token width.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, row-major.
    pub w: Vec<T>,
    /// Row scales (int8 weights; empty for f32).
    pub scales: Vec<f32>,
    /// Tokens, `n * cols`.
    pub x: Vec<f32>,
    /// Optional bias per row.
    pub bias: Option<Vec<f32>>,
}

impl<T> MatCase<T> {
    pub(crate) fn shape(&self) -> String {
        let bias = self.bias.is_some();
        format!(
            "rows {} cols {} n {} bias {bias}",
            self.rows, self.cols, self.n
        )
    }
}

/// The down projection of `n` tokens of `k` units: `out0 (n x cols) += h (n x k) * w (k x
/// cols)`, int8 tokens times their scale.
#[derive(Clone, Debug)]
pub struct AccCase<T> {
    /// Output columns.
    pub cols: usize,
    /// Units per token.
    pub k: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, `k * cols`.
    pub w: Vec<T>,
    /// Tokens, `n * k`.
    pub h: Vec<T>,
    /// Token scales (int8 tokens; empty for f32).
    pub hs: Vec<f32>,
    /// The output before the call, `n * cols`.
    pub out0: Vec<f32>,
}
