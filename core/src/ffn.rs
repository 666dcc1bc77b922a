//! Feed-forward layers, dense and top-k (skeleton).

use crate::Error;
use crate::arena::Arena;
use crate::config::Activation;
use crate::kernels::Matrix;

/// Weights of one feed-forward block.
#[derive(Debug, Clone, Copy)]
pub struct FfnWeights<'a> {
    /// `d_ff x d_model`: the "keys" of the memory.
    pub up: Matrix<'a>,
    /// Bias of `up` (`d_ff`), if any.
    pub up_bias: Option<&'a [f32]>,
    /// Gate projection `d_ff x d_model` of a gated FFN: `act(gate x) * (up x)`.
    pub gate: Option<Matrix<'a>>,
    /// Down projection stored transposed, `d_ff x d_model`: row `j` is the "value" added
    /// with weight `h_j`.
    pub down_t: Matrix<'a>,
    /// Bias of the down projection (`d_model`), if any.
    pub down_bias: Option<&'a [f32]>,
    /// Hidden activation.
    pub act: Activation,
}

/// Scratch bytes for a feed-forward call over `chunk` tokens.
pub const fn scratch_bytes(d_ff: usize, chunk: usize, k_ff: Option<usize>) -> usize {
    let _ = (d_ff, chunk, k_ff);
    0
}

/// Working buffers of a feed-forward call, sliced from the arena.
pub struct FfnScratch<'a> {
    _bufs: &'a mut [f32],
}

impl<'a> FfnScratch<'a> {
    /// Takes exactly [`scratch_bytes`] from the arena.
    pub fn new(
        arena: &mut Arena<'a>,
        d_ff: usize,
        chunk: usize,
        k_ff: Option<usize>,
    ) -> Result<Self, Error> {
        let _ = (d_ff, chunk, k_ff);
        Ok(FfnScratch {
            _bufs: arena.take(0)?,
        })
    }
}

/// `out = down(act(up x))` (or the gated form) for `n` tokens `x` (`n x d_model`, `n <= chunk`),
/// keeping only the `k_ff` hidden units of largest magnitude per token when `k_ff` is set.
pub fn ffn(
    w: &FfnWeights<'_>,
    x: &[f32],
    k_ff: Option<usize>,
    scratch: &mut FfnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    let _ = (w, x, k_ff, scratch, out);
    todo!()
}
