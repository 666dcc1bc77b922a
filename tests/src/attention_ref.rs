//! Naive f64 references for attention and the feed-forward block, and a seeded generator.
//!
//! The references are written for clarity, not memory: a full score row per query, a sort,
//! a softmax over the kept set; a full hidden row per token, a sort, a sum over the kept rows.

pub use crate::rng::Rng;

/// Shape of a reference attention call.
#[derive(Debug, Clone, Copy)]
pub struct RefAttn {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Causal masking.
    pub causal: bool,
    /// Absolute position of the first query.
    pub q_pos: usize,
    /// Keys kept per query and head; `None`: all visible keys.
    pub k: Option<usize>,
}

/// Attention in f64: for every query and head, the full score row over the visible keys,
/// sorted best first (score descending, then key index ascending), the first `k` kept, a
/// softmax over them and the weighted sum of their value rows. A query with no visible key
/// gives zeros. `q` is `n_q x (n_heads*head_dim)`, `k` and `v` are `n x (n_kv_heads*head_dim)`.
pub fn attention_ref(
    a: &RefAttn,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    valid: Option<&[bool]>,
) -> Vec<f64> {
    let hd = a.head_dim;
    let q_dim = a.n_heads * hd;
    let kv_dim = a.n_kv_heads * hd;
    let n_q = q.len() / q_dim;
    let group = a.n_heads / a.n_kv_heads;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0f64; q.len()];
    for i in 0..n_q {
        let pos = a.q_pos + i;
        for h in 0..a.n_heads {
            let kvh = h / group;
            let qr = &q[i * q_dim + h * hd..][..hd];
            let mut row: Vec<(f64, usize)> = (0..n)
                .filter(|&j| valid.is_none_or(|m| m[j]) && !(a.causal && j > pos))
                .map(|j| {
                    let kr = &k[j * kv_dim + kvh * hd..][..hd];
                    let s: f64 = qr.iter().zip(kr).map(|(&x, &y)| x as f64 * y as f64).sum();
                    (s * scale, j)
                })
                .collect();
            row.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap().then(x.1.cmp(&y.1)));
            if let Some(kk) = a.k {
                row.truncate(kk);
            }
            if row.is_empty() {
                continue;
            }
            let m = row.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x.0 - m).exp()).sum();
            let o = &mut out[i * q_dim + h * hd..][..hd];
            for &(s, j) in &row {
                let w = (s - m).exp() / z;
                for (d, ov) in o.iter_mut().enumerate() {
                    *ov += w * v[j * kv_dim + kvh * hd + d] as f64;
                }
            }
        }
    }
    out
}

/// Largest `|a - b|` over two equally long slices (an f32 result against an f64 reference or
/// another f32 result), in f64.
pub fn max_abs_diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x.into() - y.into()).abs())
        .fold(0.0, f64::max)
}

/// Weights of a reference feed-forward block, dequantized to f64, row-major.
pub struct RefFfn<'a> {
    /// Model width.
    pub d_model: usize,
    /// Hidden width.
    pub d_ff: usize,
    /// `d_ff x d_model`.
    pub up: &'a [f64],
    /// `d_ff`, if any.
    pub up_bias: Option<&'a [f64]>,
    /// `d_ff x d_model`, gated blocks only.
    pub gate: Option<&'a [f64]>,
    /// `d_ff x d_model` (the down projection transposed).
    pub down_t: &'a [f64],
    /// `d_model`, if any.
    pub down_bias: Option<&'a [f64]>,
}

/// The feed-forward block in f64 for tokens `x` (`n x d_model`): the full hidden row
/// `h = act(up x + b)` (or `act(gate x) * (up x + b)`), then, when `k_ff` is set, only the
/// `k_ff` units of largest `|h|` (lower index first on ties) are kept; the output is
/// `down_bias + sum_j h_j down_t[j]`. `hidden` maps the f64 pre-activations `(gate or up, up)`
/// of one unit to `h`: the test chooses an exact f64 activation or one that reproduces the
/// f32 engine's ranking.
pub fn ffn_ref(
    w: &RefFfn<'_>,
    hidden: &dyn Fn(f64, f64) -> f64,
    x: &[f32],
    k_ff: Option<usize>,
) -> Vec<f64> {
    let (d, f) = (w.d_model, w.d_ff);
    let n = x.len() / d;
    let mut out = vec![0.0f64; n * d];
    for t in 0..n {
        let xt = &x[t * d..(t + 1) * d];
        let dot = |m: &[f64], j: usize| -> f64 {
            m[j * d..(j + 1) * d]
                .iter()
                .zip(xt)
                .map(|(&a, &b)| a * b as f64)
                .sum()
        };
        let mut h: Vec<(f64, usize)> = (0..f)
            .map(|j| {
                let u = dot(w.up, j) + w.up_bias.map_or(0.0, |b| b[j]);
                let g = w.gate.map_or(u, |g| dot(g, j));
                (hidden(g, u), j)
            })
            .collect();
        if let Some(k) = k_ff {
            h.sort_by(|a, b| {
                b.0.abs()
                    .partial_cmp(&a.0.abs())
                    .unwrap()
                    .then(a.1.cmp(&b.1))
            });
            h.truncate(k);
        }
        let o = &mut out[t * d..(t + 1) * d];
        for (c, ov) in o.iter_mut().enumerate() {
            *ov = w.down_bias.map_or(0.0, |b| b[c]);
        }
        for &(hj, j) in &h {
            for (c, ov) in o.iter_mut().enumerate() {
                *ov += hj * w.down_t[j * d + c];
            }
        }
    }
    out
}

/// `erf` in f64 to about 1e-9: its Maclaurin series below 4, and +-1 beyond (where
/// `1 - erf(4) < 2e-8`).
pub fn erf(x: f64) -> f64 {
    if x.abs() >= 4.0 {
        return x.signum();
    }
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    let mut n = 0.0;
    while term.abs() > 1e-17 {
        n += 1.0;
        term *= -x2 / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// GELU, erf form, in f64.
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// GELU, tanh form, in f64.
pub fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// SiLU in f64.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// ReLU in f64.
pub fn relu(x: f64) -> f64 {
    x.max(0.0)
}
