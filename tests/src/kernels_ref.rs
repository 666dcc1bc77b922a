//! Naive f64 references for the kernels and the math shim, and owned test matrices in every
//! dtype (built by quantizing f32 values, compared against their dequantized f64 values).

use topkit::config::Activation;
use topkit::kernels::{BLOCK, BlockType, DType, Matrix, Weights, f16};

/// `erf(x)` in f64, independent of any library: the Maclaurin series for `|x| < 3` (largest
/// term about 170, so about 1e-13 of cancellation error), and `1 - erfc` with erfc from its
/// continued fraction (evaluated bottom-up, 80 levels) beyond.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let y = if ax < 3.0 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax; // (-1)^n x^(2n+1) / n!
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / core::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
        let mut k = ax;
        for i in (1..=80).rev() {
            k = ax + (i as f64 / 2.0) / k;
        }
        1.0 - (-ax * ax).exp() / core::f64::consts::PI.sqrt() / k
    };
    if x < 0.0 { -y } else { y }
}

/// An activation in f64 (GELU-tanh with the same constants as the kernel's formula).
pub fn activate_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::GeluErf => 0.5 * x * (1.0 + erf_f64(x / 2f64.sqrt())),
        Activation::GeluTanh => {
            let u = (2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// A weight matrix owned by a test, in one dtype.
#[derive(Debug, Clone)]
pub enum OwnedMatrix {
    /// f32 values.
    F32(Vec<f32>),
    /// f16 values (rounded from f32).
    F16(Vec<f16>),
    /// Symmetric int8 per row: `scale = max|row| / 127`, `q = round(w / scale)`.
    I8 {
        /// Quantized values.
        q: Vec<i8>,
        /// One scale per row.
        scales: Vec<f32>,
    },
    /// ggml blocks, rounded to nearest ([`BlockType::quantize`]).
    Blocks {
        /// The block type.
        ty: BlockType,
        /// The blocks, row-major.
        data: Vec<u8>,
    },
}

/// A test matrix: shape plus storage.
#[derive(Debug, Clone)]
pub struct TestMatrix {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    /// The storage.
    pub data: OwnedMatrix,
}

impl TestMatrix {
    /// Quantizes the row-major `values` (`rows * cols`) into `dtype`.
    pub fn quantize(dtype: DType, rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols);
        let data = match dtype {
            DType::F32 => OwnedMatrix::F32(values.to_vec()),
            DType::F16 => OwnedMatrix::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            DType::I8 => {
                let mut q = Vec::with_capacity(values.len());
                let mut scales = Vec::with_capacity(rows);
                for r in 0..rows {
                    let row = &values[r * cols..(r + 1) * cols];
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    scales.push(scale);
                    q.extend(
                        row.iter()
                            .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8),
                    );
                }
                OwnedMatrix::I8 { q, scales }
            }
            DType::Block(ty) => {
                assert_eq!(cols % BLOCK, 0, "block matrices have whole blocks per row");
                let bb = ty.block_bytes();
                let mut data = vec![0u8; values.len() / BLOCK * bb];
                for (w, out) in values.chunks_exact(BLOCK).zip(data.chunks_exact_mut(bb)) {
                    ty.quantize(w, out);
                }
                OwnedMatrix::Blocks { ty, data }
            }
        };
        TestMatrix { rows, cols, data }
    }

    /// A view for the kernels.
    pub fn matrix(&self) -> Matrix<'_> {
        let w = match &self.data {
            OwnedMatrix::F32(d) => Weights::F32(d),
            OwnedMatrix::F16(d) => Weights::F16(d),
            OwnedMatrix::I8 { q, scales } => Weights::I8 { q, scales },
            OwnedMatrix::Blocks { ty, data } => Weights::Blocks { ty: *ty, data },
        };
        Matrix::new(self.rows, self.cols, w).expect("test matrix shape")
    }

    /// Element `(r, c)` as the kernels see it (dequantized), in f64.
    pub fn get(&self, r: usize, c: usize) -> f64 {
        let i = r * self.cols + c;
        match &self.data {
            OwnedMatrix::F32(d) => d[i] as f64,
            OwnedMatrix::F16(d) => d[i].to_f64(),
            OwnedMatrix::I8 { q, scales } => scales[r] as f64 * q[i] as f64,
            OwnedMatrix::Blocks { ty, data } => {
                let bb = ty.block_bytes();
                let b = i / BLOCK;
                ty.element(&data[b * bb..(b + 1) * bb], i % BLOCK) as f64
            }
        }
    }

    /// `(sum_c W[r][c] x[c], sum_c |W[r][c] x[c]|)` in f64: the exact dot and its condition
    /// scale (for rounding-error bounds).
    pub fn dot_row(&self, r: usize, x: &[f32]) -> (f64, f64) {
        let mut s = 0.0;
        let mut a = 0.0;
        for (c, &xc) in x.iter().enumerate() {
            let p = self.get(r, c) * xc as f64;
            s += p;
            a += p.abs();
        }
        (s, a)
    }
}

/// LayerNorm of one row in f64 (biased variance, like PyTorch).
pub fn layer_norm_f64(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    x.iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&v, (&g, &b))| (v as f64 - mean) * inv * g as f64 + b as f64)
        .collect()
}

/// RMSNorm of one row in f64.
pub fn rms_norm_f64(x: &[f32], gamma: &[f32], eps: f32) -> Vec<f64> {
    let n = x.len() as f64;
    let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(gamma)
        .map(|(&v, &g)| v as f64 * inv * g as f64)
        .collect()
}

/// Softmax in f64.
pub fn softmax_f64(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}
