//! Error-compensating quantization of a linear layer to ggml blocks (GPTQ, Frantar et al.
//! 2022), and the output error a quantized layer makes on calibration activations.
//!
//! A linear layer `y = W x` with `in` inputs is quantized one input column at a time; the
//! error each column makes is fed back into the columns not yet quantized through the
//! Cholesky factor of `H^-1`, where `H = X^T X` sums the outer products of the layer's
//! inputs over the calibration tokens. So later columns absorb what earlier ones lost, in
//! the directions the activations actually take. The block scales (and mins) are ggml's:
//! each block's `d`, `m` are the round-to-nearest ones ([`BlockType::quantize`]) of its 32
//! weights as they are when its first column is reached, then every weight is rounded with
//! them; the bytes are ggml's layout, so kernels cannot tell a GPTQ block from an RTN one.
//!
//! Both layouts of the packed file are handled: `[out, in]` matrices (blocks run along the
//! inputs, as `q`, `k`, `v`, `o`, `ffn.up`) and the transposed `[in, out]` down projection
//! `ffn.down_t` (blocks run along the outputs, so a block is quantized when its input row is).

use topkit::kernels::{BLOCK, BlockType, Kernels, Matrix, Weights};

/// Relative dampening added to the diagonal of `H` (its mean times this), as the GPTQ paper
/// does, so that the Cholesky exists when some inputs are (nearly) never active.
pub const DAMP: f64 = 0.01;

/// How a linear layer's weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[out, in]` row-major: a row is one output, blocks along the inputs.
    OutIn,
    /// `[in, out]` row-major (the transposed down projection): a row is one input.
    InOut,
}

/// The upper-triangular `U` with `U^T U = (H + damp I)^-1`, `n x n` row-major, from the
/// `n x n` symmetric `h`. Inputs that were never active (`H[i][i] == 0`) get `H[i][i] = 1`.
/// `None` when `H` is not positive definite even after dampening (non-finite input).
pub fn inverse_factor(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut m = h.to_vec();
    let mean = (0..n).map(|i| m[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let damp = DAMP * if mean > 0.0 { mean } else { 1.0 };
    for i in 0..n {
        if m[i * n + i] == 0.0 {
            m[i * n + i] = 1.0;
        }
        m[i * n + i] += damp;
    }
    // With J the order reversal, J H J = L L^T gives H = (J L J)(J L J)^T, an upper factor
    // times its transpose, so H^-1 = U^T U with U = (J L J)^-1 = J L^-1 J (upper).
    let r = |i: usize| n - 1 - i;
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = m[r(i) * n + r(j)];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    // L^-1, kept transposed (column j of L^-1 is row j of `t`) so the sums run along rows.
    let mut t = vec![0f64; n * n];
    for j in 0..n {
        t[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let mut s = 0.0;
            for k in j..i {
                s += l[i * n + k] * t[j * n + k];
            }
            t[j * n + i] = -s / l[i * n + i];
        }
    }
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            // U[i][j] = Linv[r(i)][r(j)] = t[r(j)][r(i)].
            u[i * n + j] = t[r(j) * n + r(i)];
        }
    }
    u.iter().all(|v| v.is_finite()).then_some(u)
}

/// The stored integer (`0..2^bits`, the `_0` offset included; `Q8_0`: the i8 bits) of `w`
/// in a block of scale `d` and min `m`, and its dequantized value (as
/// [`BlockType::dequantize`] computes it).
fn round_with(ty: BlockType, d: f32, m: f32, w: f32) -> (u8, f32) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    match ty {
        BlockType::Q8_0 => {
            let q = (w * id).round().clamp(-127.0, 127.0);
            (q as i8 as u8, d * q)
        }
        _ => {
            let top = ((1u32 << ty.bits()) - 1) as f32;
            let off = ty.offset() as f32;
            let q = ((w - m) * id + off).round().clamp(0.0, top);
            let v = q - off;
            (q as u8, if ty.has_min() { d * v + m } else { d * v })
        }
    }
}

/// The scale and min ggml's round-to-nearest gives 32 weights (f16-rounded).
fn block_scale(ty: BlockType, w: &[f32]) -> (f32, f32) {
    let mut b = [0u8; 34];
    let b = &mut b[..ty.block_bytes()];
    ty.quantize(w, b);
    ty.scale_min(b)
}

/// What GPTQ rounds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grid {
    /// ggml blocks of 32 along the stored rows.
    Block(BlockType),
    /// Symmetric int8 with one scale per stored row (`max|row| / 127`, as
    /// [`crate::quant::quantize_i8`]).
    Int8,
}

/// GPTQ-quantizes the weight `w` of a linear layer with `n_in` inputs and `n_out` outputs,
/// stored in `layout`, to blocks of `ty`, given `u` from [`inverse_factor`] of its inputs'
/// `H` (`n_in x n_in`). Returns the blocks in the file's layout (row-major over the stored
/// rows). The block dimension must be a multiple of [`BLOCK`].
pub fn quantize(
    ty: BlockType,
    w: &[f32],
    layout: Layout,
    n_in: usize,
    n_out: usize,
    u: &[f64],
) -> Vec<u8> {
    let (q, sm) = run(Grid::Block(ty), w, layout, n_in, n_out, u);
    let mut out = vec![0u8; sm.len() * ty.block_bytes()];
    let mut ints = [0u8; BLOCK];
    for ((ob, qs), &(d, m)) in out
        .chunks_exact_mut(ty.block_bytes())
        .zip(q.chunks_exact(BLOCK))
        .zip(&sm)
    {
        ints.copy_from_slice(qs);
        ty.pack(&ints, d, m, ob);
    }
    out
}

/// [`quantize`] to symmetric int8 with one f32 scale per stored row: the values and the
/// scales, as the file stores them. The scales are round-to-nearest's (`max|row| / 127` of
/// the row when it is reached); GPTQ moves the values.
pub fn quantize_int8(
    w: &[f32],
    layout: Layout,
    n_in: usize,
    n_out: usize,
    u: &[f64],
) -> (Vec<i8>, Vec<f32>) {
    let (q, sm) = run(Grid::Int8, w, layout, n_in, n_out, u);
    (
        q.into_iter().map(|v| v as i8).collect(),
        sm.into_iter().map(|(d, _)| d).collect(),
    )
}

/// The int8 scale of `row`.
fn int8_scale(row: impl Iterator<Item = f32>) -> f32 {
    row.fold(0f32, |m, x| m.max(x.abs())) / 127.0
}

/// The GPTQ loop: the stored integers in the file's layout and the scale (and min) of every
/// group (block, or stored row for int8), indexed as the file stores them.
fn run(
    grid: Grid,
    w: &[f32],
    layout: Layout,
    n_in: usize,
    n_out: usize,
    u: &[f64],
) -> (Vec<u8>, Vec<(f32, f32)>) {
    // Work on W^T ([in][out]): one row per input, updated as earlier inputs are quantized.
    let mut wt = match layout {
        Layout::InOut => w.to_vec(),
        Layout::OutIn => transpose(w, n_out, n_in),
    };
    let mut q = vec![0u8; n_in * n_out];
    let groups = match (grid, layout) {
        (Grid::Block(_), _) => n_in * n_out / BLOCK,
        (Grid::Int8, Layout::OutIn) => n_out,
        (Grid::Int8, Layout::InOut) => n_in,
    };
    let mut sm = vec![(0f32, 0f32); groups];
    if let (Grid::Int8, Layout::OutIn) = (grid, layout) {
        // One scale per output, from its whole row as it is before any feedback.
        for (o, g) in sm.iter_mut().enumerate() {
            *g = (int8_scale((0..n_in).map(|i| wt[i * n_out + o])), 0.0);
        }
    }
    let group = |i: usize, o: usize| match (grid, layout) {
        (Grid::Block(_), Layout::OutIn) => o * (n_in / BLOCK) + i / BLOCK,
        (Grid::Block(_), Layout::InOut) => i * (n_out / BLOCK) + o / BLOCK,
        (Grid::Int8, Layout::OutIn) => o,
        (Grid::Int8, Layout::InOut) => i,
    };
    let mut err = vec![0f32; BLOCK * n_out];
    let mut col = [0f32; BLOCK];
    for b0 in (0..n_in).step_by(BLOCK) {
        let b1 = (b0 + BLOCK).min(n_in);
        if let (Grid::Block(ty), Layout::OutIn) = (grid, layout) {
            // The blocks of inputs b0..b0+32, one per output, from their current weights.
            for o in 0..n_out {
                for (k, c) in col.iter_mut().enumerate() {
                    *c = wt[(b0 + k) * n_out + o];
                }
                sm[group(b0, o)] = block_scale(ty, &col);
            }
        }
        for i in b0..b1 {
            let row = i * n_out;
            match (grid, layout) {
                (Grid::Block(ty), Layout::InOut) => {
                    for g in 0..n_out / BLOCK {
                        let at = row + g * BLOCK;
                        sm[i * (n_out / BLOCK) + g] = block_scale(ty, &wt[at..at + BLOCK]);
                    }
                }
                (Grid::Int8, Layout::InOut) => {
                    sm[i] = (int8_scale(wt[row..row + n_out].iter().copied()), 0.0);
                }
                _ => {}
            }
            let uii = u[i * n_in + i] as f32;
            let e = &mut err[(i - b0) * n_out..(i - b0 + 1) * n_out];
            for o in 0..n_out {
                let (d, m) = sm[group(i, o)];
                let x = wt[row + o];
                let (qi, back) = match grid {
                    Grid::Block(ty) => round_with(ty, d, m, x),
                    Grid::Int8 => {
                        let v = if d > 0.0 {
                            (x / d).round().clamp(-127.0, 127.0)
                        } else {
                            0.0
                        };
                        (v as i8 as u8, v * d)
                    }
                };
                q[row + o] = qi;
                e[o] = (x - back) / uii;
            }
            for j in i + 1..b1 {
                let c = u[i * n_in + j] as f32;
                let e = &err[(i - b0) * n_out..(i - b0 + 1) * n_out];
                for (wv, ev) in wt[j * n_out..(j + 1) * n_out].iter_mut().zip(e) {
                    *wv -= c * ev;
                }
            }
        }
        // The block's errors into every later input at once (the "lazy batch" of the paper).
        for j in b1..n_in {
            let dst = &mut wt[j * n_out..(j + 1) * n_out];
            for i in b0..b1 {
                let c = u[i * n_in + j] as f32;
                if c == 0.0 {
                    continue;
                }
                let e = &err[(i - b0) * n_out..(i - b0 + 1) * n_out];
                for (wv, ev) in dst.iter_mut().zip(e) {
                    *wv -= c * ev;
                }
            }
        }
    }
    // Back to the stored layout.
    let q = match layout {
        Layout::InOut => q,
        Layout::OutIn => transpose(&q, n_in, n_out),
    };
    (q, sm)
}

fn transpose<T: Copy + Default>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// `sum_ij H_ij (A A^T)_ij` for `A` with `n` rows (one per input) of `m` values: the summed
/// squared outputs `||X A||^2` over the calibration tokens (`a` row-major `[n][m]`).
fn quad(h: &[f64], a: &[f32], n: usize, m: usize) -> f64 {
    let mut g = vec![0f32; n * n];
    // A A^T with the host's fast f32 product (the Gram matrix of the rows).
    match Matrix::new(n, m, Weights::F32(a)) {
        Ok(mat) => Kernels::Fast.matmul(&mat, a, n, None, &mut g, &mut []),
        Err(_) => return f64::NAN,
    }
    h.iter().zip(&g).map(|(&x, &y)| x * f64::from(y)).sum()
}

/// The relative output error `||X (W - W')^T|| / ||X W^T||` of a quantized weight `q`
/// against `w` (both f32, stored in `layout`) over the calibration inputs whose `H = X^T X`
/// (`n_in x n_in`) is `h`. 0 for an all-zero output.
pub fn output_error(
    h: &[f64],
    w: &[f32],
    q: &[f32],
    layout: Layout,
    n_in: usize,
    n_out: usize,
) -> f64 {
    let (wt, et) = {
        let e: Vec<f32> = w.iter().zip(q).map(|(a, b)| a - b).collect();
        match layout {
            Layout::InOut => (w.to_vec(), e),
            Layout::OutIn => (transpose(w, n_out, n_in), transpose(&e, n_out, n_in)),
        }
    };
    let sig = quad(h, &wt, n_in, n_out);
    let err = quad(h, &et, n_in, n_out);
    if sig > 0.0 {
        (err.max(0.0) / sig).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `H = X^T X` of `t` tokens with correlated inputs (so that feedback has work to do).
    fn hessian(n_in: usize, t: usize) -> Vec<f64> {
        let base = values(t * 4, 7);
        let noise = values(t * n_in, 9);
        let x: Vec<f64> = (0..t * n_in)
            .map(|k| {
                let (tok, i) = (k / n_in, k % n_in);
                f64::from(base[tok * 4 + i % 4]) * (1.0 + i as f64 / 8.0)
                    + 0.1 * f64::from(noise[k])
            })
            .collect();
        let mut h = vec![0f64; n_in * n_in];
        for tok in 0..t {
            let r = &x[tok * n_in..(tok + 1) * n_in];
            for i in 0..n_in {
                for j in 0..n_in {
                    h[i * n_in + j] += r[i] * r[j];
                }
            }
        }
        h
    }

    #[test]
    fn inverse_factor_inverts() {
        let n = 40;
        let h = hessian(n, 200);
        let u = inverse_factor(&h, n).unwrap();
        // (H + damp) U^T U = I, to a tolerance set by the conditioning (1e-6 relative).
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
            }
        }
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..n {
                    let hk = h[i * n + k] + if i == k { DAMP * mean } else { 0.0 };
                    let mut inv = 0.0;
                    for l in 0..n {
                        inv += u[l * n + k] * u[l * n + j];
                    }
                    s += hk * inv;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-6, "({i},{j}): {s}");
            }
        }
    }

    /// GPTQ's output error is below round-to-nearest's on the calibration inputs, for every
    /// block type and both layouts, and its blocks decode with the kernels' dequantizer.
    #[test]
    fn gptq_beats_round_to_nearest() {
        let (n_in, n_out) = (64, 64);
        let h = hessian(n_in, 300);
        let u = inverse_factor(&h, n_in).unwrap();
        let w = values(n_in * n_out, 3);
        for ty in BlockType::ALL {
            for layout in [Layout::OutIn, Layout::InOut] {
                let rtn =
                    crate::quant::dequantize_blocks(&crate::quant::quantize_blocks(&w, ty), ty);
                let g = quantize(ty, &w, layout, n_in, n_out, &u);
                assert_eq!(g.len(), n_in * n_out / BLOCK * ty.block_bytes());
                let gq = crate::quant::dequantize_blocks(&g, ty);
                let e_rtn = output_error(&h, &w, &rtn, layout, n_in, n_out);
                let e_gptq = output_error(&h, &w, &gq, layout, n_in, n_out);
                assert!(
                    e_gptq < e_rtn,
                    "{ty:?} {layout:?}: GPTQ {e_gptq} not below RTN {e_rtn}"
                );
                assert!(e_gptq > 0.0);
            }
        }
    }

    /// GPTQ to int8 rows beats the per-row round-to-nearest of `quant::quantize_i8`.
    #[test]
    fn gptq_int8_beats_round_to_nearest() {
        let (n_in, n_out) = (64, 48);
        let h = hessian(n_in, 300);
        let u = inverse_factor(&h, n_in).unwrap();
        let w = values(n_in * n_out, 11);
        for layout in [Layout::OutIn, Layout::InOut] {
            let cols = if layout == Layout::OutIn { n_in } else { n_out };
            let (rq, rs) = crate::quant::quantize_i8(&w, cols);
            let rtn: Vec<f32> = rq
                .iter()
                .enumerate()
                .map(|(k, &v)| f32::from(v) * rs[k / cols])
                .collect();
            let (q, s) = quantize_int8(&w, layout, n_in, n_out, &u);
            assert_eq!((q.len(), s.len()), (w.len(), w.len() / cols));
            let g: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(k, &v)| f32::from(v) * s[k / cols])
                .collect();
            let e_rtn = output_error(&h, &w, &rtn, layout, n_in, n_out);
            let e_gptq = output_error(&h, &w, &g, layout, n_in, n_out);
            assert!(
                e_gptq < e_rtn,
                "{layout:?}: GPTQ {e_gptq} not below RTN {e_rtn}"
            );
        }
    }

    #[test]
    fn round_with_matches_the_blocks() {
        // Rounding each weight with the block's own RTN scale gives the RTN block back.
        let w = values(32, 5);
        for ty in BlockType::ALL {
            let mut b = vec![0u8; ty.block_bytes()];
            ty.quantize(&w, &mut b);
            let (d, m) = ty.scale_min(&b);
            let mut want = [0f32; BLOCK];
            ty.dequantize(&b, &mut want);
            for (j, &x) in w.iter().enumerate() {
                let (_, back) = round_with(ty, d, m, x);
                // ggml rounds with f32 d before its f16 rounding, so a weight near a
                // rounding boundary may land one step away: at most one step d.
                assert!((back - want[j]).abs() <= d * 1.0001, "{ty:?} {j}");
            }
        }
    }
}
