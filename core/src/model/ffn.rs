//! Feed-forward blocks, dense and top-k, plain and gated, over a chunk of tokens.
//!
//! The hidden unit `j` of token `t` is `h = act(up[j] . x_t + up_bias[j])`, or for a gated
//! block `h = act(gate[j] . x_t) * (up[j] . x_t + up_bias[j])`; the output is
//! `down_bias + sum_j h_j * down_t[j]`, the rows of `down_t` being the "values" of the memory.
//! The down projection is stored either transposed (`d_ff x d_model`, unit `j` is row `j`:
//! [`DownLayout::Transposed`]) or in ggml's layout (`d_model x d_ff`, unit `j` is column `j`:
//! [`DownLayout::Columns`]), which a GGUF's quantized blocks (along `d_ff`) need. Both add unit
//! `j` element by element in the same order ([`Kernels::axpy_row`] of the transpose and
//! [`Kernels::axpy_col`] give the same bits), so the reference results do not depend on it.
//!
//! Loops are weight-stationary: the outer loop runs over the hidden units, the inner over the
//! chunk's tokens, so each row of `up`, `gate` (and, dense, `down_t`) is read once per chunk.
//!
//! - Dense: each token's output accumulates `h_j * down_t[j]` as soon as `h_j` is known, so no
//!   hidden buffer exists and the scratch is empty.
//! - Top-k: each token keeps the `k_ff` units of largest `|h|` (for ReLU that is the largest
//!   value) in `k_ff` slots (f32 value + u16 unit index, 6 bytes per slot; ties go to the lower
//!   index); then only those rows of `down_t` are summed, in increasing unit order. That is the
//!   dense order, so `k_ff >= d_ff` gives the dense result bit for bit.
//!
//! In both modes a unit with `h == 0` adds nothing and its `down_t` row is not read.
//!
//! [`Kernels::Fast`] computes the hidden units in blocks of [`UP_UNITS`] for up to
//! [`Q8_GROUP`] tokens at a time, with int8 activations for int8 weights; its working buffers
//! (the quantized tokens, the block of hidden values, ...) are a second part of the scratch,
//! [`fast_scratch_bytes`], taken by [`FfnScratch::new_fast`].

use crate::Error;
use crate::arena::{ALIGN, Arena, padded};
use crate::config::Activation;
use crate::kernels::{
    BLOCK, DType, FfnArgs, Kernels, Matrix, Q8_GROUP, Q8_MAX_COLS, Q8Rows, Weights, activate_fast,
    q8_blocks, q8_scratch_bytes,
};
use crate::topk::{Rank, TopK};

/// Largest `d_ff` of a top-k block: unit indices are stored as `u16` in the slots.
pub const MAX_D_FF_TOPK: usize = 1 << 16;

/// Weights of one feed-forward block.
#[derive(Debug, Clone, Copy)]
pub struct FfnWeights<'a> {
    /// `d_ff x d_model`: the "keys" of the memory.
    pub up: Matrix<'a>,
    /// Bias of `up` (`d_ff`), if any.
    pub up_bias: Option<&'a [f32]>,
    /// Gate projection `d_ff x d_model` of a gated FFN: `act(gate x) * (up x)`.
    pub gate: Option<Matrix<'a>>,
    /// Down projection: `d_ff x d_model` stored transposed (row `j` is the "value" added
    /// with weight `h_j`) for [`DownLayout::Transposed`], `d_model x d_ff` (column `j` is that
    /// value) for [`DownLayout::Columns`].
    pub down_t: Matrix<'a>,
    /// How `down_t` is stored.
    pub down_layout: DownLayout,
    /// Bias of the down projection (`d_model`), if any.
    pub down_bias: Option<&'a [f32]>,
    /// Hidden activation.
    pub act: Activation,
}

/// How the down projection of [`FfnWeights`] is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownLayout {
    /// `d_ff x d_model`, the transpose of the projection: the value of unit `j` is row `j`.
    /// The fast kernels' fused and int8 down projections need this layout.
    #[default]
    Transposed,
    /// `d_model x d_ff`, ggml's layout (a GGUF's `ffn_down`, quantized blocks along `d_ff`):
    /// the value of unit `j` is column `j`, added by [`Kernels::axpy_col`].
    Columns,
}

impl FfnWeights<'_> {
    /// `out += h * value_j`: the down projection's unit `j` (a row or a column of `down_t`,
    /// as [`FfnWeights::down_layout`] says).
    #[inline]
    fn add_unit(&self, kernels: Kernels, j: usize, h: f32, out: &mut [f32]) {
        match self.down_layout {
            DownLayout::Transposed => kernels.axpy_row(&self.down_t, j, h, out),
            DownLayout::Columns => kernels.axpy_col(&self.down_t, j, h, out),
        }
    }
}

/// `padded(n * size)`, saturating at `usize::MAX`.
const fn buf_bytes(n: usize, size: usize) -> usize {
    match n.checked_mul(size) {
        Some(b) if b <= usize::MAX - ALIGN => padded(b),
        _ => usize::MAX,
    }
}

/// Scratch bytes for a feed-forward call over `chunk` tokens (what [`FfnScratch::new`] takes).
/// With `C = chunk` and `k = min(k_ff, d_ff)`:
///
/// - top-k (`k_ff = Some(_)`): `padded(4*C*k) + padded(2*C*k) + padded(4*C)` bytes: the `C*k`
///   f32 kept activations, the `C*k` u16 kept unit indices, one u32 selection state (fill count) per token;
/// - dense (`k_ff = None`): 0 bytes (no hidden buffer, see the module doc).
///
/// `padded` rounds up to 16 bytes ([`crate::arena::padded`]). Saturates at `usize::MAX` on
/// overflow.
pub const fn scratch_bytes(d_ff: usize, chunk: usize, k_ff: Option<usize>) -> usize {
    match k_ff {
        Some(k) => {
            let k = if k < d_ff { k } else { d_ff };
            let slots = match chunk.checked_mul(k) {
                Some(s) => s,
                None => return usize::MAX,
            };
            buf_bytes(slots, 4)
                .saturating_add(buf_bytes(slots, 2))
                .saturating_add(buf_bytes(chunk, 4))
        }
        None => 0,
    }
}

/// Hidden units [`Kernels::Fast`] computes with one matrix product (rows of `up`, and `gate`).
pub const UP_UNITS: usize = 256;
/// Hidden units [`Kernels::Fast`] projects down together: with int8 `down_t` they share one
/// int8 scale per token.
const Q8_UNITS: usize = 64;
const _: () = assert!(Q8_UNITS == crate::kernels::Q8_BLOCK);

/// The parts of the fast scratch, in f32 words: `(q8, hidden, gate, hidden_q8, hidden_scales)`.
const fn fast_parts(d_model: usize, d_ff: usize, tokens: usize, gated: bool) -> [usize; 5] {
    let g = if tokens < Q8_GROUP { tokens } else { Q8_GROUP };
    let units = if d_ff < UP_UNITS { d_ff } else { UP_UNITS };
    let hidden = padded(4 * g * units) / 4;
    [
        q8_scratch_bytes(d_model, tokens) / 4,
        hidden,
        if gated { hidden } else { 0 },
        padded(g * Q8_UNITS) / 4,
        padded(4 * g) / 4,
    ]
}

/// Bytes of the [`Kernels::Fast`] part of a feed-forward scratch for up to `tokens` tokens per
/// call (what [`FfnScratch::new_fast`] takes after [`scratch_bytes`]), for int8 or f32 weights
/// alike, dense or top-k. With `g = min(tokens, Q8_GROUP)` (16) and `u = min(d_ff,
/// UP_UNITS)` (256):
///
/// - `q8_scratch_bytes(d_model, tokens)`: the tokens quantized to int8
///   ([`crate::kernels::q8_scratch_bytes`]: groups of 16 tokens, up to 16 groups or 64 KiB);
/// - `padded(4 g u)`: one block of hidden values (f32), and as much again for a gated block's
///   gate values;
/// - `padded(64 g) + padded(4 g)`: a block of 64 hidden values per token quantized to int8, and
///   their scales (int8 `down_t`).
///
/// 0 for `tokens == 0`. Bounded for every valid configuration (`d_model, d_ff <= 65536`).
pub const fn fast_scratch_bytes(d_model: usize, d_ff: usize, tokens: usize, gated: bool) -> usize {
    if tokens == 0 || d_model > crate::config::MAX_DIM || d_ff > crate::config::MAX_DIM {
        return 0;
    }
    let p = fast_parts(d_model, d_ff, tokens, gated);
    4 * (p[0] + p[1] + p[2] + p[3] + p[4])
}

/// Working buffers of a feed-forward call, sliced from the arena.
pub struct FfnScratch<'a> {
    /// Top-k: `C*k` kept activations. Dense: empty.
    scores: &'a mut [f32],
    /// Top-k: `C*k` kept unit indices. Dense: empty.
    idx: &'a mut [u16],
    /// Top-k: selection state per token ([`TopK::state`]). Dense: empty.
    lens: &'a mut [u32],
    /// Tokens per call the buffers hold.
    chunk: usize,
    /// Slots per token (top-k), `None` for dense.
    k: Option<usize>,
    /// [`Kernels::Fast`]'s buffers ([`fast_scratch_bytes`]), f32 words; empty when made by
    /// [`FfnScratch::new`].
    fast: &'a mut [f32],
}

impl<'a> FfnScratch<'a> {
    /// Takes exactly [`scratch_bytes`] from the arena: the buffers of [`Kernels::Reference`]
    /// (a call with [`Kernels::Fast`] then fails, see [`FfnScratch::new_fast`]).
    ///
    /// # Errors
    /// The arena's error when it is too small, [`Error::InvalidConfig`] for sizes that
    /// overflow.
    pub fn new(
        arena: &mut Arena<'a>,
        d_ff: usize,
        chunk: usize,
        k_ff: Option<usize>,
    ) -> Result<Self, Error> {
        if chunk == 0 {
            return Err(Error::InvalidConfig("chunk must be at least 1"));
        }
        match k_ff {
            Some(0) => Err(Error::InvalidConfig("k_ff must be at least 1")),
            Some(k) => {
                let k = k.min(d_ff);
                let slots = chunk
                    .checked_mul(k)
                    .ok_or(Error::InvalidConfig("chunk * k_ff overflows"))?;
                let scores = arena.take(slots)?;
                let idx = arena.take(slots)?;
                let lens = arena.take(chunk)?;
                Ok(FfnScratch {
                    scores,
                    idx,
                    lens,
                    chunk,
                    k: Some(k),
                    fast: &mut [],
                })
            }
            None => Ok(FfnScratch {
                scores: &mut [],
                idx: &mut [],
                lens: &mut [],
                chunk,
                k: None,
                fast: &mut [],
            }),
        }
    }

    /// Takes [`scratch_bytes`] and then [`fast_scratch_bytes`]`(d_model, d_ff, chunk, gated)`
    /// from the arena: the buffers of both kernel choices, for blocks of `d_model x d_ff`
    /// (`gated`: with a gate projection) and up to `chunk` tokens per call.
    ///
    /// # Errors
    /// As [`FfnScratch::new`].
    pub fn new_fast(
        arena: &mut Arena<'a>,
        d_model: usize,
        d_ff: usize,
        chunk: usize,
        k_ff: Option<usize>,
        gated: bool,
    ) -> Result<Self, Error> {
        let mut s = Self::new(arena, d_ff, chunk, k_ff)?;
        if d_model > crate::config::MAX_DIM || d_ff > crate::config::MAX_DIM {
            return Err(Error::InvalidConfig("model dimension above 65536"));
        }
        s.fast = arena.take(fast_scratch_bytes(d_model, d_ff, chunk, gated) / 4)?;
        Ok(s)
    }
}

/// Checks every shape; returns `(d_model, d_ff, n_tokens)`.
fn check(
    w: &FfnWeights<'_>,
    x: &[f32],
    k_ff: Option<usize>,
    s: &FfnScratch<'_>,
    out: &[f32],
) -> Result<(usize, usize, usize), Error> {
    let (d_ff, d) = (w.up.rows(), w.up.cols());
    if d == 0 {
        return Err(Error::InvalidConfig("d_model must be at least 1"));
    }
    let shape = |m: &Matrix<'_>, (rows, cols), what| {
        if m.rows() != rows || m.cols() != cols {
            return Err(Error::ShapeMismatch {
                what,
                expected: d_ff * d,
                found: m.rows().saturating_mul(m.cols()),
            });
        }
        Ok(())
    };
    let same = |m: &Matrix<'_>, what| shape(m, (d_ff, d), what);
    match w.down_layout {
        DownLayout::Transposed => same(&w.down_t, "ffn down_t (d_ff x d_model)")?,
        DownLayout::Columns => shape(&w.down_t, (d, d_ff), "ffn down (d_model x d_ff)")?,
    }
    if let Some(g) = &w.gate {
        same(g, "ffn gate (d_ff x d_model)")?;
    }
    let len = |b: Option<&[f32]>, n, what| match b {
        Some(b) if b.len() != n => Err(Error::ShapeMismatch {
            what,
            expected: n,
            found: b.len(),
        }),
        _ => Ok(()),
    };
    len(w.up_bias, d_ff, "ffn up bias")?;
    len(w.down_bias, d, "ffn down bias")?;
    if !x.len().is_multiple_of(d) {
        let expected = x.len() - x.len() % d;
        return Err(Error::ShapeMismatch {
            what: "ffn input",
            expected,
            found: x.len(),
        });
    }
    if out.len() != x.len() {
        return Err(Error::ShapeMismatch {
            what: "ffn output",
            expected: x.len(),
            found: out.len(),
        });
    }
    let n = x.len() / d;
    if n > s.chunk {
        return Err(Error::ShapeMismatch {
            what: "ffn tokens per call",
            expected: s.chunk,
            found: n,
        });
    }
    if let Some(k) = k_ff {
        if k == 0 {
            return Err(Error::InvalidConfig("k_ff must be at least 1"));
        }
        if d_ff > MAX_D_FF_TOPK {
            return Err(Error::InvalidConfig(
                "top-k feed-forward needs d_ff <= 65536",
            ));
        }
        if s.k.is_none_or(|have| k.min(d_ff) > have) {
            return Err(Error::InvalidConfig(
                "ffn scratch was made for a smaller k_ff",
            ));
        }
    }
    Ok((d, d_ff, n))
}

/// `out = down(act(up x))` (or the gated form) for `n` tokens `x` (`n x d_model`, `n <= chunk`),
/// keeping only the `k_ff` hidden units of largest magnitude per token when `k_ff` is set
/// (`k_ff >= d_ff` keeps all: the dense result). `out` has the shape of `x`.
///
/// # Errors
/// [`Error::ShapeMismatch`] for inconsistent weights, biases, input or output,
/// [`Error::InvalidConfig`] for `k_ff == 0`, a scratch made for a smaller `k_ff` or dense, or
/// top-k with `d_ff > 65536`.
pub fn ffn(
    w: &FfnWeights<'_>,
    x: &[f32],
    k_ff: Option<usize>,
    scratch: &mut FfnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    ffn_with(Kernels::Reference, w, x, k_ff, scratch, out)
}

/// [`ffn`] with the chosen kernels. With [`Kernels::Fast`] and int8 `up` (and `gate`)
/// weights, each token is quantized once to int8 with its own scale and the unit's
/// pre-activation is an exact i32 dot product (see [`crate::kernels::matmul_q8_tokens`]); the
/// down projection stays f32.
///
/// # Errors
/// As [`ffn`].
pub fn ffn_with(
    kernels: Kernels,
    w: &FfnWeights<'_>,
    x: &[f32],
    k_ff: Option<usize>,
    scratch: &mut FfnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    let (d, d_ff, n) = check(w, x, k_ff, scratch, out)?;
    if kernels == Kernels::Fast
        && scratch.fast.len() < fast_scratch_bytes(d, d_ff, scratch.chunk, w.gate.is_some()) / 4
    {
        return Err(Error::InvalidConfig(
            "ffn scratch was made without the fast kernels' buffers (FfnScratch::new_fast)",
        ));
    }
    let q8 = kernels == Kernels::Fast
        && w.up.dtype() == DType::I8
        && w.gate.is_none_or(|g| g.dtype() == DType::I8)
        && d <= Q8_MAX_COLS;
    if q8 {
        ffn_q8(kernels, w, (x, n), k_ff, scratch, out, (d, d_ff));
        return Ok(());
    }
    if kernels == Kernels::Fast
        && k_ff.is_none()
        && w.down_layout == DownLayout::Transposed
        && let (Weights::F32(up), Weights::F32(down)) = (w.up.weights(), w.down_t.weights())
    {
        let gate = match w.gate.map(|g| g.weights()) {
            None => Some(None),
            Some(Weights::F32(g)) => Some(Some(g)),
            Some(_) => None,
        };
        if let Some(gate) = gate {
            let [q8, hidden, gate_w, ..] = fast_parts(d, d_ff, scratch.chunk, gate.is_some());
            let (hb, rest) = scratch.fast[q8..].split_at_mut(hidden);
            let gb = &mut rest[..gate_w];
            ffn_f32_fast(w, (up, gate, down), (x, n), (d, d_ff), out, (hb, gb));
            return Ok(());
        }
    }
    if kernels == Kernels::Fast
        && k_ff.is_none()
        && (w.down_layout == DownLayout::Transposed || w.down_t.block_row(0).is_some())
        && w.up.block_row(0).is_some()
        && w.gate.is_none_or(|g| g.block_row(0).is_some())
        && d <= Q8_MAX_COLS
    {
        ffn_blocks_fast(w, (x, n), scratch, out, (d, d_ff));
        return Ok(());
    }
    let act = |v: f32| kernels.activate(w.act, v);
    let hidden = |j: usize, xt: &[f32]| {
        let u = kernels.dot_row(&w.up, j, xt) + w.up_bias.map_or(0.0, |b| b[j]);
        match &w.gate {
            Some(g) => act(kernels.dot_row(g, j, xt)) * u,
            None => act(u),
        }
    };
    for ot in out.chunks_exact_mut(d) {
        match w.down_bias {
            Some(b) => ot.copy_from_slice(b),
            None => ot.fill(0.0),
        }
    }
    match k_ff {
        None if w.down_layout == DownLayout::Columns && w.down_t.block_row(0).is_some() => {
            dense_block_cols(kernels, w, (x, n), (d, d_ff), out);
        }
        None => {
            for j in 0..d_ff {
                for (xt, ot) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
                    let h = hidden(j, xt);
                    if h != 0.0 {
                        w.add_unit(kernels, j, h, ot);
                    }
                }
            }
        }
        Some(k) => {
            let k = k.min(d_ff);
            let s = scratch;
            let lens = &mut s.lens[..n];
            lens.fill(0);
            for j in 0..d_ff {
                for (t, (xt, len)) in x.chunks_exact(d).zip(lens.iter_mut()).enumerate() {
                    let mut sel = TopK::resume(
                        &mut s.scores[t * k..(t + 1) * k],
                        &mut s.idx[t * k..(t + 1) * k],
                        *len,
                        Rank::Magnitude,
                    );
                    // j < d_ff <= 65536 was checked, so it fits in u16.
                    sel.push(hidden(j, xt), j as u16);
                    *len = sel.state();
                }
            }
            for (t, (ot, &len)) in out.chunks_exact_mut(d).zip(lens.iter()).enumerate() {
                let mut sel = TopK::resume(
                    &mut s.scores[t * k..(t + 1) * k],
                    &mut s.idx[t * k..(t + 1) * k],
                    len,
                    Rank::Magnitude,
                );
                let (hs, js) = sel.sorted_by_index();
                for (&h, &j) in hs.iter().zip(js) {
                    if h != 0.0 {
                        w.add_unit(kernels, j as usize, h, ot);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Dense f32 body of [`ffn_with`] with the fast kernels: [`Q8_GROUP`] tokens at a time, the
/// hidden units [`UP_UNITS`] at a time by [`Kernels::matmul`] into `hb` (and a gated block's gate
/// values into `gb`), from the fast scratch, then projected down by
/// [`Kernels::accumulate_f32`] (register-tiled; rounding differs from [`ffn`]).
fn ffn_f32_fast(
    w: &FfnWeights<'_>,
    (up, gate, down): (&[f32], Option<&[f32]>, &[f32]),
    (x, n): (&[f32], usize),
    (d, d_ff): (usize, usize),
    out: &mut [f32],
    (hb, gb): (&mut [f32], &mut [f32]),
) {
    let kernels = Kernels::Fast;
    for ot in out.chunks_exact_mut(d) {
        match w.down_bias {
            Some(b) => ot.copy_from_slice(b),
            None => ot.fill(0.0),
        }
    }
    // The same loop fused where the target has it (AVX-512, each token group packed once).
    if gate.is_none() && kernels.ffn_f32_fused(&fused_args(w, x, n), out) {
        return;
    }
    let mut t0 = 0;
    while t0 < n {
        let g = Q8_GROUP.min(n - t0);
        let xg = &x[t0 * d..(t0 + g) * d];
        let mut j0 = 0;
        while j0 < d_ff {
            let bl = UP_UNITS.min(d_ff - j0);
            let hb = &mut hb[..g * bl];
            let Ok(upm) = Matrix::new(bl, d, Weights::F32(&up[j0 * d..(j0 + bl) * d])) else {
                return;
            };
            // f32 weights: the product needs no int8 scratch.
            kernels.matmul(&upm, xg, g, w.up_bias.map(|b| &b[j0..j0 + bl]), hb, &mut []);
            match gate {
                None => kernels.activate_slice(w.act, hb),
                Some(gq) => {
                    let Ok(gm) = Matrix::new(bl, d, Weights::F32(&gq[j0 * d..(j0 + bl) * d]))
                    else {
                        return;
                    };
                    let gb = &mut gb[..g * bl];
                    kernels.matmul(&gm, xg, g, None, gb, &mut []);
                    for (h, &gv) in hb.iter_mut().zip(gb.iter()) {
                        *h *= activate_fast(w.act, gv);
                    }
                }
            }
            kernels.accumulate_f32(
                &mut out[t0 * d..(t0 + g) * d],
                &down[j0 * d..(j0 + bl) * d],
                d,
                hb,
                g,
            );
            j0 += bl;
        }
        t0 += g;
    }
}

/// Int8-activation body of [`ffn_with`]. The chunk's tokens are quantized [`Q8_GROUP`] at a
/// time by blocks of 64 columns ([`Kernels::quantize_q8`]) into the fast scratch; the hidden units
/// are computed [`UP_UNITS`] at a time by [`Kernels::matmul_q8`] (exact i32 dots). Dense with int8
/// `down_t`, each token's block of [`Q8_UNITS`] values `h_j * scale_j` is quantized to int8
/// with its own scale and projected down with exact i32 sums
/// ([`crate::kernels::accumulate_q8_tokens`]); otherwise (top-k, or f32 `down_t`) the down
/// projection and the selection are those of [`ffn`]. Every buffer is in the scratch `s`
/// (made by [`FfnScratch::new_fast`], checked by [`ffn_with`]).
fn ffn_q8(
    kernels: Kernels,
    w: &FfnWeights<'_>,
    (x, n): (&[f32], usize),
    k_ff: Option<usize>,
    s: &mut FfnScratch<'_>,
    out: &mut [f32],
    (d, d_ff): (usize, usize),
) {
    /// Rows `j0..j0 + bl` of an int8 matrix of `d` columns.
    fn rows<'w>(q: &'w [i8], sc: &'w [f32], j0: usize, bl: usize, d: usize) -> Option<Matrix<'w>> {
        let w = Weights::I8 {
            q: q.get(j0 * d..(j0 + bl) * d)?,
            scales: sc.get(j0..j0 + bl)?,
        };
        Matrix::new(bl, d, w).ok()
    }
    // ffn_with checked the dtypes of up and gate; down_t's values are read only under down_q8.
    let (up_q, up_s) = w.up.int8().unwrap_or_default();
    let gate = w.gate.as_ref().map(|g| g.int8().unwrap_or_default());
    let down_q8 =
        k_ff.is_none() && w.down_layout == DownLayout::Transposed && w.down_t.dtype() == DType::I8;
    let (down_q, down_s) = w.down_t.int8().unwrap_or_default();
    for ot in out.chunks_exact_mut(d) {
        match w.down_bias {
            Some(b) => ot.copy_from_slice(b),
            None => ot.fill(0.0),
        }
    }
    let [q8_w, hb_w, gb_w, hq_w, hs_w] = fast_parts(d, d_ff, s.chunk, gate.is_some());
    let (q8, rest) = s.fast.split_at_mut(q8_w);
    // The whole dense block fused where the target has it (AVX-512 VNNI; wasm simd128, every
    // token of the call sharing each step's packed weights, its working buffers on the wasm
    // stack): the same bits as the loop below.
    if k_ff.is_none()
        && down_q8
        && gate.is_none()
        && kernels.ffn_q8_fused(&fused_args(w, x, n), out, q8)
    {
        return;
    }
    let (hb, rest) = rest.split_at_mut(hb_w);
    let (gb, rest) = rest.split_at_mut(gb_w);
    let (hq, hs) = rest.split_at_mut(hq_w);
    let hq: &mut [i8] = bytemuck::cast_slice_mut(hq);
    let hs = &mut hs[..hs_w];
    let k = k_ff.map(|k| k.min(d_ff));
    if k.is_some() {
        s.lens[..n].fill(0);
    }
    let mut t0 = 0;
    while t0 < n {
        let g = Q8_GROUP.min(n - t0);
        let xq = kernels.quantize_q8(&x[t0 * d..(t0 + g) * d], d, q8);
        let mut j0 = 0;
        while j0 < d_ff {
            let bl = UP_UNITS.min(d_ff - j0);
            let hb = &mut hb[..g * bl];
            let Some(up) = rows(up_q, up_s, j0, bl, d) else {
                return;
            };
            let bias = w.up_bias.map(|b| &b[j0..j0 + bl]);
            kernels.matmul_q8(&up, &xq, bias, hb);
            match gate {
                None => kernels.activate_slice(w.act, hb),
                Some((gq, gs)) => {
                    let Some(gm) = rows(gq, gs, j0, bl, d) else {
                        return;
                    };
                    let gb = &mut gb[..g * bl];
                    kernels.matmul_q8(&gm, &xq, None, gb);
                    for (h, &gv) in hb.iter_mut().zip(gb.iter()) {
                        *h *= activate_fast(w.act, gv);
                    }
                }
            }
            if k.is_none() && down_q8 {
                // Each token's block of Q8_UNITS values h_j * scale_j quantized with its own
                // scale, projected down by exact i32 sums.
                let mut u0 = 0;
                while u0 < bl {
                    let ul = Q8_UNITS.min(bl - u0);
                    let ju = j0 + u0;
                    for t in 0..g {
                        let h = &mut hb[t * bl + u0..t * bl + u0 + ul];
                        for (v, &sc) in h.iter_mut().zip(&down_s[ju..ju + ul]) {
                            *v *= sc;
                        }
                        // One block of Q8_BLOCK = Q8_UNITS values: quantize_i8 of h.
                        kernels.quantize_q8_token(
                            h,
                            &mut hq[t * ul..(t + 1) * ul],
                            &mut hs[t..t + 1],
                        );
                    }
                    let h = Q8Rows {
                        q: &hq[..g * ul],
                        s: &hs[..g],
                        n: g,
                    };
                    kernels.accumulate_q8(
                        &mut out[t0 * d..(t0 + g) * d],
                        &down_q[ju * d..(ju + ul) * d],
                        d,
                        h,
                    );
                    u0 += ul;
                }
            } else if k.is_none()
                && w.down_layout == DownLayout::Transposed
                && w.down_t.block_row(0).is_some()
            {
                add_rows_f32(
                    kernels,
                    &w.down_t,
                    j0,
                    hb,
                    g,
                    &mut out[t0 * d..(t0 + g) * d],
                );
            } else {
                for t in 0..g {
                    let tt = t0 + t;
                    let ot = &mut out[tt * d..(tt + 1) * d];
                    let h = &hb[t * bl..(t + 1) * bl];
                    match k {
                        None => {
                            for (b, &hv) in h.iter().enumerate() {
                                if hv != 0.0 {
                                    w.add_unit(kernels, j0 + b, hv, ot);
                                }
                            }
                        }
                        Some(k) => {
                            let mut sel = TopK::resume(
                                &mut s.scores[tt * k..(tt + 1) * k],
                                &mut s.idx[tt * k..(tt + 1) * k],
                                s.lens[tt],
                                Rank::Magnitude,
                            );
                            for (b, &hv) in h.iter().enumerate() {
                                // j < d_ff <= 65536 was checked, so it fits in u16.
                                sel.push(hv, (j0 + b) as u16);
                            }
                            s.lens[tt] = sel.state();
                        }
                    }
                }
            }
            j0 += bl;
        }
        t0 += g;
    }
    if let Some(k) = k {
        for (t, ot) in out.chunks_exact_mut(d).enumerate() {
            let mut sel = TopK::resume(
                &mut s.scores[t * k..(t + 1) * k],
                &mut s.idx[t * k..(t + 1) * k],
                s.lens[t],
                Rank::Magnitude,
            );
            let (hs, js) = sel.sorted_by_index();
            for (&h, &j) in hs.iter().zip(js) {
                if h != 0.0 {
                    w.add_unit(kernels, j as usize, h, ot);
                }
            }
        }
    }
}

/// Dense body of [`ffn_with`] with the fast kernels for block `up` (and `gate`) weights and a
/// block-typed down projection in ggml's layout, or any `down_t` ([`DownLayout::Transposed`],
/// projected by [`add_rows_f32`]): the tokens quantized to int8 row by row ([`quantize_rows`],
/// the layout the block products take) into the fast scratch, the hidden units
/// [`UP_UNITS`] at a time by [`Kernels::matmul_q8_rows`] (exact i32 block sums, the two scales
/// in f32). The down projection wants each token's `d_ff` hidden values at once: when the
/// fast scratch holds them for some tokens ([`down_tokens`]), they are gathered there,
/// quantized to int8 and projected by [`Kernels::matmul_q8_rows`] (the arch block kernels,
/// [`ffn_blocks_fast_rows`]); otherwise (`d_ff > Q8_MAX_COLS`, or a scratch too small) each
/// block of hidden values is projected by [`add_block_cols`] (each weight block decoded once
/// per group of [`Q8_GROUP`] tokens). Rounding differs from [`ffn`] in the int8 activations.
fn ffn_blocks_fast(
    w: &FfnWeights<'_>,
    (x, n): (&[f32], usize),
    s: &mut FfnScratch<'_>,
    out: &mut [f32],
    (d, d_ff): (usize, usize),
) {
    let gated = w.gate.is_some();
    let units = UP_UNITS.min(d_ff);
    let gd = down_tokens(s.fast.len(), (d, d_ff), Q8_GROUP.min(s.chunk), gated);
    if gd > 0 && w.down_layout == DownLayout::Columns {
        ffn_blocks_fast_rows(w, (x, n), s, out, (d, d_ff), gd);
        return;
    }
    for ot in out.chunks_exact_mut(d) {
        match w.down_bias {
            Some(b) => ot.copy_from_slice(b),
            None => ot.fill(0.0),
        }
    }
    let [q8_w, hb_w, gb_w, ..] = fast_parts(d, d_ff, s.chunk, gated);
    let (q8, rest) = s.fast.split_at_mut(q8_w);
    let (hb, rest) = rest.split_at_mut(hb_w);
    let gb = &mut rest[..gb_w];
    let mut t0 = 0;
    while t0 < n {
        let g = Q8_GROUP.min(n - t0);
        // q8 holds a group of 16 tokens: q8_scratch_bytes(d, chunk) >= q8_group_words(d).
        let xq = quantize_rows(&x[t0 * d..(t0 + g) * d], d, q8);
        let mut j0 = 0;
        while j0 < d_ff {
            let bl = units.min(d_ff - j0);
            let hb = &mut hb[..g * bl];
            if !hidden_block(w, xq, j0, hb, gb) {
                return;
            }
            let ot = &mut out[t0 * d..(t0 + g) * d];
            match w.down_layout {
                DownLayout::Columns => add_block_cols(&w.down_t, j0, hb, ot),
                DownLayout::Transposed => add_rows_f32(Kernels::Fast, &w.down_t, j0, hb, g, ot),
            }
            j0 += bl;
        }
        t0 += g;
    }
}

/// f32 values of `down_t` rows [`add_rows_f32`] converts at a time (16 KiB on the stack).
const ROWS_F32_BUF: usize = 4096;

/// `out_t += sum_b h_t[b] * down_t[j0 + b]` for the `g <= Q8_GROUP` tokens of `out` (`d_model`
/// values each), `h` holding `bl = h.len() / g` hidden values per token: the dense down
/// projection of a block of units with the fast kernels for a `down_t` ([`DownLayout::Transposed`])
/// whose rows are not int8 (block types): up to 16 rows converted to f32 once for all the tokens
/// ([`crate::kernels::row_to_f32`]) and added by [`Kernels::accumulate_f32`]. Rows longer than
/// the buffer take the per-unit adds.
fn add_rows_f32(
    kernels: Kernels,
    down_t: &Matrix<'_>,
    j0: usize,
    h: &[f32],
    g: usize,
    out: &mut [f32],
) {
    let d = down_t.cols();
    if g == 0 || d == 0 {
        return;
    }
    let bl = h.len() / g;
    if d > ROWS_F32_BUF || g > Q8_GROUP {
        for (ht, ot) in h.chunks_exact(bl).zip(out.chunks_exact_mut(d)) {
            for (b, &hv) in ht.iter().enumerate() {
                if hv != 0.0 {
                    kernels.axpy_row(down_t, j0 + b, hv, ot);
                }
            }
        }
        return;
    }
    let per = (ROWS_F32_BUF / d).min(16);
    let mut wbuf = [0f32; ROWS_F32_BUF];
    let mut hsub = [0f32; 16 * Q8_GROUP];
    let mut u0 = 0;
    while u0 < bl {
        let ul = per.min(bl - u0);
        for (i, wr) in wbuf[..ul * d].chunks_exact_mut(d).enumerate() {
            crate::kernels::row_to_f32(down_t, j0 + u0 + i, wr);
        }
        for t in 0..g {
            hsub[t * ul..(t + 1) * ul].copy_from_slice(&h[t * bl + u0..t * bl + u0 + ul]);
        }
        kernels.accumulate_f32(out, &wbuf[..ul * d], d, &hsub[..g * ul], g);
        u0 += ul;
    }
}

/// f32 words of `t` tokens of `cols` values quantized to int8 row by row ([`quantize_rows`]):
/// the values, then one scale per [`crate::kernels::Q8_BLOCK`] columns of each token.
const fn rows_words(t: usize, cols: usize) -> usize {
    (t * cols).div_ceil(4) + t * q8_blocks(cols)
}

/// Quantizes the token rows of `x` (`cols` values each) to int8 by blocks of
/// [`crate::kernels::Q8_BLOCK`] columns ([`Kernels::quantize_q8_token`]) into the first
/// [`rows_words`] words of `words`.
fn quantize_rows<'s>(x: &[f32], cols: usize, words: &'s mut [f32]) -> Q8Rows<'s> {
    let (n, nb) = (x.len() / cols.max(1), q8_blocks(cols));
    let (qw, sw) = words.split_at_mut((n * cols).div_ceil(4));
    let q: &mut [i8] = &mut bytemuck::cast_slice_mut(qw)[..n * cols];
    let s = &mut sw[..n * nb];
    for ((xt, qt), st) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .zip(s.chunks_exact_mut(nb))
    {
        Kernels::Fast.quantize_q8_token(xt, qt, st);
    }
    Q8Rows { q, s, n }
}

/// The activated hidden units `j0..j0 + bl` (`bl = hb.len() / xq.n`) of the int8 tokens `xq`
/// into `hb` (token-major), a gated block's gate values through `gb` (at least as long as
/// `hb`). `false` when the rows are not inside the weights (checked before, so never).
fn hidden_block(
    w: &FfnWeights<'_>,
    xq: Q8Rows<'_>,
    j0: usize,
    hb: &mut [f32],
    gb: &mut [f32],
) -> bool {
    let kernels = Kernels::Fast;
    let bl = hb.len() / xq.n.max(1);
    let Some(up) = sub_rows(&w.up, j0, bl) else {
        return false;
    };
    kernels.matmul_q8_rows(&up, xq, w.up_bias.map(|b| &b[j0..j0 + bl]), hb);
    match &w.gate {
        None => kernels.activate_slice(w.act, hb),
        Some(gm) => {
            let Some(gm) = sub_rows(gm, j0, bl) else {
                return false;
            };
            let gb = &mut gb[..hb.len()];
            kernels.matmul_q8_rows(&gm, xq, None, gb);
            for (h, &gv) in hb.iter_mut().zip(gb.iter()) {
                *h *= activate_fast(w.act, gv);
            }
        }
    }
    true
}

/// f32 words [`ffn_blocks_fast_rows`] lays out before the `t x d_ff` hidden rows of `t`
/// tokens: their int8 rows, a block of [`UP_UNITS`] hidden values and (gated) of gate values
/// per token; later the hidden rows quantized to int8, over the same words.
const fn rows_lead(d: usize, d_ff: usize, t: usize, gated: bool) -> usize {
    let units = if d_ff < UP_UNITS { d_ff } else { UP_UNITS };
    let up = rows_words(t, d) + t * units * if gated { 2 } else { 1 };
    let down = rows_words(t, d_ff);
    if up > down { up } else { down }
}

/// Tokens (at most `max`) whose `d_ff` hidden values [`ffn_blocks_fast_rows`] holds at once
/// in a fast scratch of `words` f32 words ([`rows_lead`] words, then the hidden rows); 0 when
/// not even one token's fit or the rows are too long for the int8 products (`Q8_MAX_COLS`).
/// The scratch is the plan's ([`fast_scratch_bytes`], sized for the f32 and int8 paths),
/// which is enough for one token from a chunk of one on, for SmolLM2's shapes (one token:
/// 2201 words of 2980) and most others: the plan does not change with the weights' layout.
const fn down_tokens(words: usize, (d, d_ff): (usize, usize), max: usize, gated: bool) -> usize {
    if d > Q8_MAX_COLS || d_ff > Q8_MAX_COLS {
        return 0;
    }
    let mut t = max;
    while t > 0 && rows_lead(d, d_ff, t, gated) + t * d_ff > words {
        t -= 1;
    }
    t
}

/// [`ffn_blocks_fast`] with room for the hidden rows of `gd >= 1` tokens ([`down_tokens`]):
/// `gd` tokens at a time, their hidden units computed [`UP_UNITS`] at a time and gathered
/// into rows of `d_ff` values, which are quantized to int8 ([`quantize_rows`]) and projected
/// down with the down bias by [`Kernels::matmul_q8_rows`].
fn ffn_blocks_fast_rows(
    w: &FfnWeights<'_>,
    (x, n): (&[f32], usize),
    s: &mut FfnScratch<'_>,
    out: &mut [f32],
    (d, d_ff): (usize, usize),
    gd: usize,
) {
    let gated = w.gate.is_some();
    let units = UP_UNITS.min(d_ff);
    let (front, rest) = s.fast.split_at_mut(rows_lead(d, d_ff, gd, gated));
    let hid = &mut rest[..gd * d_ff];
    let mut t0 = 0;
    while t0 < n {
        let g = gd.min(n - t0);
        {
            let (q8, rest) = front.split_at_mut(rows_words(gd, d));
            let (hb, gb) = rest.split_at_mut(gd * units);
            let xq = quantize_rows(&x[t0 * d..(t0 + g) * d], d, q8);
            let mut j0 = 0;
            while j0 < d_ff {
                let bl = units.min(d_ff - j0);
                let hb = &mut hb[..g * bl];
                if !hidden_block(w, xq, j0, hb, gb) {
                    return;
                }
                for (ht, row) in hb.chunks_exact(bl).zip(hid.chunks_exact_mut(d_ff)) {
                    row[j0..j0 + bl].copy_from_slice(ht);
                }
                j0 += bl;
            }
        }
        let hq = quantize_rows(&hid[..g * d_ff], d_ff, front);
        let y = &mut out[t0 * d..(t0 + g) * d];
        Kernels::Fast.matmul_q8_rows(&w.down_t, hq, w.down_bias, y);
        t0 += g;
    }
}

/// Tokens [`dense_block_cols`] computes together.
const COLS_TOKENS: usize = 8;

/// Rows `j0..j0 + n` of `m`, `None` when they are not inside it.
fn sub_rows<'w>(m: &Matrix<'w>, j0: usize, n: usize) -> Option<Matrix<'w>> {
    let c = m.cols();
    let w = match m.weights() {
        Weights::F32(d) => Weights::F32(d.get(j0 * c..(j0 + n) * c)?),
        Weights::F16(d) => Weights::F16(d.get(j0 * c..(j0 + n) * c)?),
        Weights::I8 { q, scales } => Weights::I8 {
            q: q.get(j0 * c..(j0 + n) * c)?,
            scales: scales.get(j0..j0 + n)?,
        },
        Weights::Blocks { ty, data } => {
            let rb = ty.matrix_bytes(1, c)?;
            Weights::Blocks {
                ty,
                data: data.get(j0 * rb..(j0 + n) * rb)?,
            }
        }
    };
    Matrix::new(n, c, w).ok()
}

/// The dense body of [`ffn_with`] for a block-typed down projection in ggml's layout
/// ([`DownLayout::Columns`]), with the bits of the unit-by-unit loop: [`COLS_TOKENS`] tokens
/// and [`BLOCK`] units at a time, the units' pre-activations by the generic
/// [`crate::kernels::matmul`] (bit-identical to [`crate::kernels::dot_row`] for any number of
/// tokens, each weight block decoded once per group of tokens), then each block of the down
/// projection decoded once per token ([`add_block_cols`]). Its buffers (2 KiB) are on the
/// stack of this function only, which is never inlined.
#[inline(never)]
fn dense_block_cols(
    kernels: Kernels,
    w: &FfnWeights<'_>,
    (x, n): (&[f32], usize),
    (d, d_ff): (usize, usize),
    out: &mut [f32],
) {
    let mut hb = [0f32; BLOCK * COLS_TOKENS];
    let mut gb = [0f32; BLOCK * COLS_TOKENS];
    let mut t0 = 0;
    while t0 < n {
        let g = COLS_TOKENS.min(n - t0);
        let xg = &x[t0 * d..(t0 + g) * d];
        let mut j0 = 0;
        while j0 < d_ff {
            let bl = BLOCK.min(d_ff - j0);
            let Some(up) = sub_rows(&w.up, j0, bl) else {
                return;
            };
            let hb = &mut hb[..g * bl];
            crate::kernels::matmul(&up, xg, g, w.up_bias.map(|b| &b[j0..j0 + bl]), hb);
            match &w.gate {
                None => hb.iter_mut().for_each(|h| *h = kernels.activate(w.act, *h)),
                Some(gm) => {
                    let Some(gm) = sub_rows(gm, j0, bl) else {
                        return;
                    };
                    let gb = &mut gb[..g * bl];
                    crate::kernels::matmul(&gm, xg, g, None, gb);
                    for (h, &gv) in hb.iter_mut().zip(gb.iter()) {
                        *h *= kernels.activate(w.act, gv);
                    }
                }
            }
            add_block_cols(&w.down_t, j0, hb, &mut out[t0 * d..(t0 + g) * d]);
            j0 += bl;
        }
        t0 += g;
    }
}

/// `out_t[r] += sum_b h_t[b] * down[r][j0 + b]` for each token `t` (`h` holds `bl` values
/// per token, `out` `d_model` per token) and a block-typed down projection in ggml's layout
/// (`d_model x d_ff`, `j0` a multiple of [`BLOCK`], `j0 + bl <= d_ff`): units with `h == 0`
/// skipped, the others added in increasing order, each product and sum as
/// [`Kernels::axpy_col`] makes it (bit-identical to adding the units one at a time). Each
/// weight block is decoded once for all the tokens.
fn add_block_cols(down: &Matrix<'_>, j0: usize, h: &[f32], out: &mut [f32]) {
    let d = down.rows();
    let n = out.len() / d.max(1);
    if d == 0 || n == 0 {
        return;
    }
    let bl = h.len() / n;
    let mut wv = [0f32; BLOCK];
    for r in 0..d {
        let Some((ty, row)) = down.block_row(r) else {
            return;
        };
        let bb = ty.block_bytes();
        let mut u0 = 0;
        while u0 < bl {
            let ul = BLOCK.min(bl - u0);
            let b = (j0 + u0) / BLOCK;
            let Some(block) = row.get(b * bb..(b + 1) * bb) else {
                return;
            };
            ty.dequantize(block, &mut wv);
            for (ht, ot) in h.chunks_exact(bl).zip(out.chunks_exact_mut(d)) {
                let o = &mut ot[r];
                for (&hv, &wj) in ht[u0..u0 + ul].iter().zip(&wv) {
                    if hv != 0.0 {
                        *o += hv * wj;
                    }
                }
            }
            u0 += ul;
        }
    }
}

/// The fused kernels' view of a dense block of `w` over the `n` tokens `x`.
fn fused_args<'a>(w: &'a FfnWeights<'a>, x: &'a [f32], n: usize) -> FfnArgs<'a> {
    FfnArgs {
        up: &w.up,
        up_bias: w.up_bias,
        act: w.act,
        down_t: &w.down_t,
        x,
        n,
    }
}
