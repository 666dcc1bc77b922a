//! Int8 products, quantization and the fused int8 feed-forward: always the generic bits (exact
//! i32 sums, the same float epilogue).

use super::product::{AccCase, MatCase};
use super::tol::bits;
use topkit::Activation;
use topkit::kernels::{self, FfnArgs, Matrix, Q8Rows, Weights};

/// Int8 weights and f32 tokens.
pub type Q8Case = MatCase<i8>;

/// The down projection of int8 tokens.
pub type AccQ8Case = AccCase<i8>;

/// An int8 matrix of `rows x cols` over `q` and its row scales.
fn int8<'a>(rows: usize, cols: usize, q: &'a [i8], scales: &'a [f32]) -> Matrix<'a> {
    Matrix::new(rows, cols, Weights::I8 { q, scales }).unwrap()
}

impl Q8Case {
    /// The weights as a matrix.
    pub fn matrix(&self) -> Matrix<'_> {
        int8(self.rows, self.cols, &self.w, &self.scales)
    }

    /// The tokens quantized by the generic `quantize_i8_token`: values (`n * cols`) and block
    /// scales (`n * q8_blocks(cols)`).
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
}

/// `matmul_q8_tokens` (the tokens quantized by the generic kernel): `f` gives the generic bits.
pub fn matmul_q8_tokens(
    c: &Q8Case,
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

/// `matmul_i8_i8_token` (quantization and product): `f` gives the generic bits.
pub fn matmul_i8_i8_token(
    c: &Q8Case,
    f: impl Fn(&Matrix<'_>, &[f32], usize, Option<&[f32]>, &mut [f32]),
) {
    let w = c.matrix();
    let mut want = vec![0f32; c.n * c.rows];
    kernels::matmul_i8_i8_token(&w, &c.x, c.n, c.bias.as_deref(), &mut want);
    let mut got = vec![f32::NAN; c.n * c.rows];
    f(&w, &c.x, c.n, c.bias.as_deref(), &mut got);
    assert_eq!(bits(&got), bits(&want), "{}", c.shape());
}

/// `accumulate_q8_tokens`: `f` gives the generic bits.
pub fn accumulate_q8_tokens(c: &AccQ8Case, f: impl Fn(&mut [f32], &[i8], usize, Q8Rows<'_>)) {
    let h = Q8Rows {
        q: &c.h,
        s: &c.hs,
        n: c.n,
    };
    let mut want = c.out0.clone();
    kernels::accumulate_q8_tokens(&mut want, &c.w, c.cols, h);
    let mut got = c.out0.clone();
    f(&mut got, &c.w, c.cols, h);
    let (cols, k, n) = (c.cols, c.k, c.n);
    assert_eq!(bits(&got), bits(&want), "cols {cols} k {k} n {n}");
}

/// `quantize_i8_token` of `x`: `f` gives the generic values and the bits of its scales.
pub fn quantize_i8_token(x: &[f32], f: impl Fn(&[f32], &mut [i8], &mut [f32])) {
    let nb = kernels::q8_blocks(x.len());
    let (mut qw, mut sw) = (vec![0i8; x.len()], vec![0f32; nb]);
    kernels::quantize_i8_token(x, &mut qw, &mut sw);
    let (mut qg, mut sg) = (vec![0i8; x.len()], vec![0f32; nb]);
    f(x, &mut qg, &mut sg);
    assert_eq!(qg, qw, "len {}", x.len());
    assert_eq!(bits(&sg), bits(&sw), "len {}", x.len());
}

/// `dot_i8_i8` of `(a, b)`: `f` returns the generic (exact) value.
pub fn dot_i8_i8(c: &(Vec<i8>, Vec<i8>), f: impl Fn(&[i8], &[i8]) -> i32) {
    assert_eq!(f(&c.0, &c.1), kernels::dot_i8_i8(&c.0, &c.1));
}

/// int8 axpy of `(q, y0, a, s)`: `f(y0, a * s, q)` gives the bits of the generic `axpy_row`
/// (`y0 += a * row`) of the one-row matrix `q` of scale `s`.
pub fn axpy_i8(c: &(Vec<i8>, Vec<f32>, f32, f32), f: impl Fn(&mut [f32], f32, &[i8])) {
    let (q, y0, a, s) = c;
    let scales = [*s];
    let mut want = y0.clone();
    kernels::axpy_row(&int8(1, q.len(), q, &scales), 0, *a, &mut want);
    let mut got = y0.clone();
    f(&mut got, a * s, q);
    assert_eq!(bits(&got), bits(&want));
}

/// A dense int8 feed-forward on `n` tokens of `d`: `up` and `down_t` are `d_ff x d` int8
/// matrices (one scale per unit), each with an optional bias (`d_ff` and `d`).
#[derive(Clone, Debug)]
pub struct FfnQ8Case {
    /// Token width.
    pub d: usize,
    /// Hidden units.
    pub d_ff: usize,
    /// Tokens.
    pub n: usize,
    /// Up projection: weights, unit scales, bias.
    pub up: (Vec<i8>, Vec<f32>, Option<Vec<f32>>),
    /// Down projection, transposed (a row per unit): weights, unit scales, bias.
    pub down: (Vec<i8>, Vec<f32>, Option<Vec<f32>>),
    /// Tokens, `n * d`.
    pub x: Vec<f32>,
    /// Activation between the projections.
    pub act: Activation,
}

impl FfnQ8Case {
    /// The up and down (transposed) matrices.
    pub fn matrices(&self) -> (Matrix<'_>, Matrix<'_>) {
        let (up, down, d_ff, d) = (&self.up, &self.down, self.d_ff, self.d);
        (int8(d_ff, d, &up.0, &up.1), int8(d_ff, d, &down.0, &down.1))
    }

    /// The output before the feed-forward adds to it: the down bias per token, or zeros.
    pub fn out0(&self) -> Vec<f32> {
        match &self.down.2 {
            Some(b) => b.repeat(self.n),
            None => vec![0f32; self.n * self.d],
        }
    }

    /// The bits every int8 feed-forward kernel gives, from the unfused generic kernels and the
    /// fast activation: per token the up projection, the activation, each unit times its
    /// `down_t` row scale, one int8 scale per `Q8_BLOCK` units, exact down-projection sums,
    /// added to [`FfnQ8Case::out0`].
    pub fn unfused(&self) -> Vec<f32> {
        let (d, d_ff, bl) = (self.d, self.d_ff, kernels::Q8_BLOCK);
        let (up, _) = self.matrices();
        let (dq, ds) = (&self.down.0, &self.down.1);
        let nb = kernels::q8_blocks(d);
        let mut out = self.out0();
        for (xt, ot) in self.x.chunks(d).zip(out.chunks_mut(d)) {
            let (mut xq, mut xs) = (vec![0i8; d], vec![0f32; nb]);
            kernels::quantize_i8_token(xt, &mut xq, &mut xs);
            let mut h = vec![0f32; d_ff];
            let xt = Q8Rows {
                q: &xq,
                s: &xs,
                n: 1,
            };
            kernels::matmul_q8_tokens(&up, xt, self.up.2.as_deref(), &mut h);
            kernels::Kernels::Fast.activate_slice(self.act, &mut h);
            for (j0, hb) in h.chunks_mut(bl).enumerate() {
                let j0 = j0 * bl;
                for (v, &sc) in hb.iter_mut().zip(&ds[j0..]) {
                    *v *= sc;
                }
                let (mut hq, mut hs) = (vec![0i8; hb.len()], [0f32]);
                kernels::quantize_i8_token(hb, &mut hq, &mut hs);
                let dqb = &dq[j0 * d..(j0 + hb.len()) * d];
                let ht = Q8Rows {
                    q: &hq,
                    s: &hs,
                    n: 1,
                };
                kernels::accumulate_q8_tokens(ot, dqb, d, ht);
            }
        }
        out
    }
}

/// A fused int8 feed-forward kernel `f` (adding to the output, returning whether it took the
/// shape): on the shapes `fits(d, d_ff)` it gives the bits of [`FfnQ8Case::unfused`]; it
/// refuses the others without touching the output.
pub fn ffn_q8(
    c: &FfnQ8Case,
    f: impl Fn(&FfnArgs<'_>, &mut [f32]) -> bool,
    fits: impl Fn(usize, usize) -> bool,
) {
    let (d, d_ff, n, act) = (c.d, c.d_ff, c.n, c.act);
    let (up, down_t) = c.matrices();
    let out0 = c.out0();
    let mut got = out0.clone();
    let args = FfnArgs {
        up: &up,
        up_bias: c.up.2.as_deref(),
        act: c.act,
        down_t: &down_t,
        x: &c.x,
        n: c.n,
    };
    let fused = f(&args, &mut got);
    if !fits(d, d_ff) {
        assert!(!fused, "d {d} d_ff {d_ff}: not the fused kernel's shape");
        assert_eq!(bits(&got), bits(&out0), "d {d} d_ff {d_ff}: output touched");
        return;
    }
    assert!(fused, "d {d} d_ff {d_ff}");
    assert_eq!(
        bits(&got),
        bits(&c.unfused()),
        "d {d} d_ff {d_ff} n {n} {act:?}"
    );
}
