//! Seeded random models (owned weights in f32, f16 or int8) and a naive f64 reference of the
//! layer stack: full score matrix, plain softmax, straightforward norms and FFN. Written from
//! the definitions, independently of the engine's chunked, in-place code path.

use half::f16;
use topkit::kernels::{Matrix, Weights};
use topkit::{
    Activation, Arch, FfnKind, LayerWeights, Model, ModelConfig, Norm, NormWeights, PosKind,
};

pub use crate::rng::Rng;

/// Storage type of the random weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dt {
    /// f32.
    F32,
    /// f16.
    F16,
    /// int8 with one f32 scale per row.
    I8,
}

/// An owned `rows x cols` matrix in one of the storage types, plus its exact values as f64.
pub struct OwnedMatrix {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    /// The values the engine sees (after f16 rounding or int8 quantization), row-major.
    pub exact: Vec<f64>,
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    q: Vec<i8>,
    scales: Vec<f32>,
    dt: Dt,
}

impl OwnedMatrix {
    /// Uniform random values in `+-1/sqrt(cols)` (so that activations stay of order 1).
    pub fn random(rng: &mut Rng, rows: usize, cols: usize, dt: Dt) -> Self {
        let a = 1.0 / (cols as f32).sqrt();
        let mut m = OwnedMatrix {
            rows,
            cols,
            exact: Vec::new(),
            f32s: Vec::new(),
            f16s: Vec::new(),
            q: Vec::new(),
            scales: Vec::new(),
            dt,
        };
        match dt {
            Dt::F32 => {
                m.f32s = rng.vec(rows * cols, -a, a);
                m.exact = m.f32s.iter().map(|&x| x as f64).collect();
            }
            Dt::F16 => {
                m.f16s = rng
                    .vec(rows * cols, -a, a)
                    .into_iter()
                    .map(f16::from_f32)
                    .collect();
                m.exact = m.f16s.iter().map(|x| x.to_f32() as f64).collect();
            }
            Dt::I8 => {
                m.scales = (0..rows)
                    .map(|_| a / 127.0 * rng.uniform(0.5, 1.5))
                    .collect();
                m.q = (0..rows * cols)
                    .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                    .collect();
                m.exact = (0..rows * cols)
                    .map(|i| m.scales[i / cols] as f64 * m.q[i] as f64)
                    .collect();
            }
        }
        m
    }

    /// The engine's view.
    pub fn view(&self) -> Matrix<'_> {
        let w = match self.dt {
            Dt::F32 => Weights::F32(&self.f32s),
            Dt::F16 => Weights::F16(&self.f16s),
            Dt::I8 => Weights::I8 {
                q: &self.q,
                scales: &self.scales,
            },
        };
        Matrix::new(self.rows, self.cols, w).expect("consistent random matrix")
    }

    /// `W x + b` in f64.
    pub fn apply(&self, x: &[f64], b: Option<&[f32]>) -> Vec<f64> {
        (0..self.rows)
            .map(|r| {
                let row = &self.exact[r * self.cols..(r + 1) * self.cols];
                let dot: f64 = row.iter().zip(x).map(|(w, x)| w * x).sum();
                dot + b.map_or(0.0, |b| b[r] as f64)
            })
            .collect()
    }
}

/// An owned norm: gain, and bias for LayerNorm.
pub struct OwnedNorm {
    /// Gain.
    pub gain: Vec<f32>,
    /// Bias (LayerNorm only).
    pub bias: Option<Vec<f32>>,
}

impl OwnedNorm {
    fn random(rng: &mut Rng, c: &ModelConfig) -> Self {
        let gain = rng.vec(c.d_model, 0.8, 1.2);
        let bias = matches!(c.norm, Norm::LayerNorm).then(|| rng.vec(c.d_model, -0.1, 0.1));
        OwnedNorm { gain, bias }
    }

    fn view(&self) -> NormWeights<'_> {
        NormWeights {
            gain: &self.gain,
            bias: self.bias.as_deref(),
        }
    }

    /// The norm of one row in f64.
    pub fn apply(&self, c: &ModelConfig, x: &mut [f64]) {
        let n = x.len() as f64;
        let eps = c.norm_eps as f64;
        match c.norm {
            Norm::LayerNorm => {
                let mean = x.iter().sum::<f64>() / n;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let inv = 1.0 / (var + eps).sqrt();
                for (i, v) in x.iter_mut().enumerate() {
                    let b = self.bias.as_ref().map_or(0.0, |b| b[i] as f64);
                    *v = (*v - mean) * inv * self.gain[i] as f64 + b;
                }
            }
            Norm::RmsNorm => {
                let ms = x.iter().map(|v| v * v).sum::<f64>() / n;
                let inv = 1.0 / (ms + eps).sqrt();
                for (i, v) in x.iter_mut().enumerate() {
                    *v *= inv * self.gain[i] as f64;
                }
            }
        }
    }
}

/// Owned weights of one block.
pub struct OwnedLayer {
    /// q, k, v, o projections.
    pub q: OwnedMatrix,
    /// Key projection.
    pub k: OwnedMatrix,
    /// Value projection.
    pub v: OwnedMatrix,
    /// Output projection.
    pub o: OwnedMatrix,
    /// Biases of q, k, v, o (BERT has them, Llama not).
    pub biases: Option<[Vec<f32>; 4]>,
    /// Attention norm.
    pub attn_norm: OwnedNorm,
    /// FFN norm.
    pub ffn_norm: OwnedNorm,
    /// FFN up, `d_ff x d_model`.
    pub up: OwnedMatrix,
    /// FFN gate (gated FFN).
    pub gate: Option<OwnedMatrix>,
    /// FFN down, transposed: `d_ff x d_model`.
    pub down_t: OwnedMatrix,
    /// FFN biases (up, down), BERT only.
    pub ffn_biases: Option<[Vec<f32>; 2]>,
}

/// A random model with owned weights.
pub struct OwnedModel {
    /// Its configuration.
    pub config: ModelConfig,
    /// Its blocks.
    pub layers: Vec<OwnedLayer>,
    /// Final norm (pre-norm models).
    pub final_norm: Option<OwnedNorm>,
}

/// A small config of the given family. BERT: post-LayerNorm, GELU (erf), plain FFN, learned
/// positions, bidirectional. Llama: pre-RMSNorm, SiLU, gated FFN, RoPE, causal.
pub fn config(
    arch: Arch,
    d_model: usize,
    n_heads: usize,
    n_kv_heads: usize,
    d_ff: usize,
    n_layers: usize,
    max_seq: usize,
) -> ModelConfig {
    let bert = matches!(arch, Arch::Bert);
    ModelConfig {
        arch,
        vocab_size: 1000,
        d_model,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim: d_model / n_heads,
        d_ff,
        max_seq,
        type_vocab_size: if bert { 2 } else { 0 },
        norm: if bert { Norm::LayerNorm } else { Norm::RmsNorm },
        norm_eps: if bert { 1e-12 } else { 1e-5 },
        act: if bert {
            Activation::GeluErf
        } else {
            Activation::Silu
        },
        ffn: if bert { FfnKind::Plain } else { FfnKind::Gated },
        pos: if bert {
            PosKind::Learned
        } else {
            PosKind::Rope
        },
        rope_theta: 10000.0,
        causal: !bert,
        tie_embeddings: !bert,
    }
}

impl OwnedModel {
    /// Seeded random weights of the config's shapes, matrices stored as `dt`.
    pub fn random(config: ModelConfig, dt: Dt, seed: u64) -> Self {
        let c = &config;
        let mut rng = Rng::new(seed);
        let bert = matches!(c.arch, Arch::Bert);
        let (d, q, kv, ff) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
        let layers = (0..c.n_layers)
            .map(|_| {
                let mut m = |r, cols| OwnedMatrix::random(&mut rng, r, cols, dt);
                let (wq, wk, wv, wo) = (m(q, d), m(kv, d), m(kv, d), m(d, q));
                let up = m(ff, d);
                let gate = matches!(c.ffn, FfnKind::Gated).then(|| m(ff, d));
                let down_t = OwnedMatrix::random(&mut rng, ff, d, dt);
                let biases = bert.then(|| [q, kv, kv, d].map(|n| rng.vec(n, -0.1, 0.1)));
                let ffn_biases = bert.then(|| [ff, d].map(|n| rng.vec(n, -0.1, 0.1)));
                OwnedLayer {
                    q: wq,
                    k: wk,
                    v: wv,
                    o: wo,
                    biases,
                    attn_norm: OwnedNorm::random(&mut rng, c),
                    ffn_norm: OwnedNorm::random(&mut rng, c),
                    up,
                    gate,
                    down_t,
                    ffn_biases,
                }
            })
            .collect();
        let final_norm = (!bert).then(|| OwnedNorm::random(&mut rng, c));
        OwnedModel {
            config,
            layers,
            final_norm,
        }
    }

    /// The engine's views of the blocks (the caller keeps them alive for [`Self::model`]).
    pub fn layer_views(&self) -> Vec<LayerWeights<'_>> {
        self.layers
            .iter()
            .map(|l| {
                let b = |i: usize| l.biases.as_ref().map(|b| b[i].as_slice());
                let fb = |i: usize| l.ffn_biases.as_ref().map(|b| b[i].as_slice());
                LayerWeights {
                    q: l.q.view(),
                    q_bias: b(0),
                    k: l.k.view(),
                    k_bias: b(1),
                    v: l.v.view(),
                    v_bias: b(2),
                    o: l.o.view(),
                    o_bias: b(3),
                    attn_norm: l.attn_norm.view(),
                    ffn: topkit::ffn::FfnWeights {
                        up: l.up.view(),
                        up_bias: fb(0),
                        gate: l.gate.as_ref().map(|g| g.view()),
                        down_t: l.down_t.view(),
                        down_layout: topkit::ffn::DownLayout::Transposed,
                        down_bias: fb(1),
                        act: self.config.act,
                    },
                    ffn_norm: l.ffn_norm.view(),
                }
            })
            .collect()
    }

    /// The checked model over `views` (from [`Self::layer_views`]).
    pub fn model<'a>(&'a self, views: &'a [LayerWeights<'a>]) -> Model<'a> {
        Model::new(
            self.config,
            views,
            self.final_norm.as_ref().map(|n| n.view()),
        )
        .expect("random model matches its config")
    }

    /// The naive f64 forward pass of `input` (`n x d_model`), dense attention.
    pub fn reference(&self, input: &[f32], valid: Option<&[bool]>) -> Vec<f64> {
        let c = &self.config;
        let d = c.d_model;
        let n = input.len() / d;
        let mut x: Vec<Vec<f64>> = input
            .chunks(d)
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        let post = matches!(c.arch, Arch::Bert);
        for l in &self.layers {
            let b = |i: usize| l.biases.as_ref().map(|b| b[i].as_slice());
            // Attention sublayer.
            let xin: Vec<Vec<f64>> = if post {
                x.clone()
            } else {
                x.iter()
                    .map(|r| {
                        let mut r = r.clone();
                        l.attn_norm.apply(c, &mut r);
                        r
                    })
                    .collect()
            };
            let mut q: Vec<Vec<f64>> = xin.iter().map(|r| l.q.apply(r, b(0))).collect();
            let mut k: Vec<Vec<f64>> = xin.iter().map(|r| l.k.apply(r, b(1))).collect();
            let v: Vec<Vec<f64>> = xin.iter().map(|r| l.v.apply(r, b(2))).collect();
            if matches!(c.pos, PosKind::Rope) {
                for (pos, r) in q.iter_mut().enumerate() {
                    rope(r, c.head_dim, pos, c.rope_theta as f64);
                }
                for (pos, r) in k.iter_mut().enumerate() {
                    rope(r, c.head_dim, pos, c.rope_theta as f64);
                }
            }
            let ctx = attention(c, &q, &k, &v, valid);
            for i in 0..n {
                let o = l.o.apply(&ctx[i], b(3));
                for (xv, ov) in x[i].iter_mut().zip(&o) {
                    *xv += ov;
                }
                if post {
                    l.attn_norm.apply(c, &mut x[i]);
                }
            }
            // Feed-forward sublayer.
            let fb = |i: usize| l.ffn_biases.as_ref().map(|b| b[i].as_slice());
            for xi in x.iter_mut() {
                let mut xin = xi.clone();
                if !post {
                    l.ffn_norm.apply(c, &mut xin);
                }
                let up = l.up.apply(&xin, fb(0));
                let h: Vec<f64> = match &l.gate {
                    Some(g) => {
                        let gv = g.apply(&xin, None);
                        gv.iter()
                            .zip(&up)
                            .map(|(g, u)| act(c.act, *g) * u)
                            .collect()
                    }
                    None => up.iter().map(|u| act(c.act, *u)).collect(),
                };
                for (j, xv) in xi.iter_mut().enumerate() {
                    let mut y = fb(1).map_or(0.0, |b| b[j] as f64);
                    for (f, hf) in h.iter().enumerate() {
                        y += hf * l.down_t.exact[f * d + j];
                    }
                    *xv += y;
                }
                if post {
                    l.ffn_norm.apply(c, xi);
                }
            }
        }
        if let Some(nrm) = &self.final_norm {
            for r in x.iter_mut() {
                nrm.apply(c, r);
            }
        }
        x.concat()
    }
}

/// HF "rotate_half" RoPE on each head of `r`.
pub fn rope(r: &mut [f64], head_dim: usize, pos: usize, theta: f64) {
    let half = head_dim / 2;
    for head in r.chunks_mut(head_dim) {
        for i in 0..half {
            let ang = pos as f64 * theta.powf(-2.0 * i as f64 / head_dim as f64);
            let (s, co) = ang.sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * co - b * s;
            head[i + half] = b * co + a * s;
        }
    }
}

/// Full attention with the whole score row and a plain softmax.
fn attention(
    c: &ModelConfig,
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    valid: Option<&[bool]>,
) -> Vec<Vec<f64>> {
    let hd = c.head_dim;
    let group = c.n_heads / c.n_kv_heads;
    let n = q.len();
    let scale = 1.0 / (hd as f64).sqrt();
    (0..n)
        .map(|i| {
            let mut out = vec![0.0; c.q_dim()];
            for h in 0..c.n_heads {
                let kh = h / group;
                let qh = &q[i][h * hd..(h + 1) * hd];
                let visible: Vec<usize> = (0..n)
                    .filter(|&j| valid.is_none_or(|v| v[j]) && (!c.causal || j <= i))
                    .collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let kj = &k[j][kh * hd..(kh + 1) * hd];
                        qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (w, &j) in e.iter().zip(&visible) {
                    for t in 0..hd {
                        out[h * hd + t] += w / z * v[j][kh * hd + t];
                    }
                }
            }
            out
        })
        .collect()
}

/// The activations in f64.
pub fn act(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// `erf` by its Maclaurin series (|x| < 3) or its asymptotic complement; error below 1e-12
/// on the range used here.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 3.0 {
        // erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let (mut term, mut sum) = (ax, 0.0);
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -ax * ax / (n + 1) as f64;
            if term.abs() < 1e-300 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Continued fraction of erfc, converged well for x >= 3.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    r.copysign(x)
}
