//! Deterministic cases for builds without proptest: shapes around the tile and block edges,
//! the fallbacks included, from [`Rng`] with a fixed seed per operation.

use super::attn::{AttnKeys, DenseCase, DenseTile, KeyBlock, SlotsCase};
use super::float::EXP_SPECIALS;
use super::q8::{AccQ8Case, FfnQ8Case, Q8Case};
use topkit::Activation;
use topkit::kernels::attention::{ATTN_BLOCK, ATTN_LANES, ATTN_TILE};

/// Deterministic pseudo-random numbers (64-bit LCG, high bits).
pub struct Rng(pub u64);

impl Rng {
    /// The next 32 bits.
    pub fn u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// `n` int8 values, -128 included.
    pub fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.u32() as i8).collect()
    }

    /// Activation-like int8 values: never -128, as `quantize_i8` never produces it.
    pub fn q8s(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| ((self.u32() % 255) as i32 - 127) as i8)
            .collect()
    }

    /// Uniform in `[-m, m)`.
    pub fn f32(&mut self, m: f32) -> f32 {
        (self.u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 * m - m
    }

    /// `n` values uniform in `[-m, m)`.
    pub fn f32s(&mut self, n: usize, m: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(m)).collect()
    }

    /// `n` positive scales in `[1e-4, m + 1e-4)`.
    pub fn scales(&mut self, n: usize, m: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(m).abs() + 1e-4).collect()
    }

    /// Values of mixed magnitude, with runs of zeros (all-zero quantization blocks).
    pub fn activations(&mut self, n: usize) -> Vec<f32> {
        let zero_from = self.u32() as usize % (n + 1);
        let zero_len = if self.u32().is_multiple_of(3) { 70 } else { 0 };
        (0..n)
            .map(|i| {
                if i >= zero_from && i < zero_from + zero_len {
                    0.0
                } else {
                    let m = [1e-3, 1.0, 50.0, 1e3][self.u32() as usize % 4];
                    self.f32(m)
                }
            })
            .collect()
    }
}

/// Columns around the 8-column loads, the 64-column blocks and the model's widths.
pub const COLS: &[usize] = &[
    1, 3, 7, 8, 9, 15, 16, 63, 64, 65, 71, 100, 128, 200, 384, 1536, 4096,
];

/// Int8 products: every width of [`COLS`] with each `(rows, n)` of `shapes` (at most 4M
/// multiply-adds), with and without bias if `biased`.
pub fn q8(
    seed: u64,
    shapes: &'static [(usize, usize)],
    biased: bool,
) -> impl Iterator<Item = Q8Case> {
    let mut rng = Rng(seed);
    let shapes = COLS
        .iter()
        .flat_map(move |&c| shapes.iter().map(move |&(r, n)| (r, c, n)));
    shapes
        .filter(|&(rows, cols, n)| cols * rows * n <= 4_000_000)
        .flat_map(move |(rows, cols, n)| {
            let w = rng.i8s(rows * cols);
            let scales = rng.scales(rows, 0.1);
            let bias = rng.f32s(rows, 1.0);
            let x = rng.activations(n * cols);
            let case = Q8Case {
                rows,
                cols,
                n,
                w,
                scales,
                x,
                bias: None,
            };
            let with_bias = biased.then(|| Q8Case {
                bias: Some(bias),
                ..case.clone()
            });
            core::iter::once(case).chain(with_bias)
        })
}

/// `accumulate_q8_tokens`: `k` even, odd, the feed-forward's 64 and past the kernels'
/// limit (generic fallback), columns below, at and past 8.
pub fn accumulate_q8() -> impl Iterator<Item = AccQ8Case> {
    let mut rng = Rng(3);
    let shapes = [1usize, 7, 8, 9, 13, 16, 40, 384]
        .into_iter()
        .flat_map(|cols| {
            [0usize, 1, 2, 5, 64, 65, 600]
                .into_iter()
                .flat_map(move |k| [1usize, 3, 4, 7, 16, 17, 70, 300].map(|n| (cols, k, n)))
        });
    shapes
        .filter(|&(cols, k, n)| k * cols * n <= 2_000_000)
        .map(move |(cols, k, n)| AccQ8Case {
            cols,
            k,
            n,
            w: rng.i8s(k * cols),
            h: rng.q8s(n * k),
            hs: rng.scales(n, 0.1),
            out0: rng.f32s(n * cols, 5.0),
        })
}

/// Inputs to quantize: every length to 200 and a few widths past it, with zero blocks and
/// values on exact halves of the step (ties round away from zero).
pub fn quantize() -> impl Iterator<Item = Vec<f32>> {
    let mut rng = Rng(4);
    (0..=200).chain([255, 256, 383, 384, 1536]).map(move |len| {
        let mut x = rng.activations(len);
        if len > 2 {
            x[..3].copy_from_slice(&[127.0, 0.5, -1.5]);
        }
        x
    })
}

/// GELU inputs: lengths past every lane count, magnitudes 1, 10 and 100.
pub fn gelu() -> impl Iterator<Item = Vec<f32>> {
    let mut rng = Rng(5);
    (0..=40).flat_map(move |len| [1.0f32, 10.0, 100.0].map(|m| rng.f32s(len, m)))
}

/// `exp` arguments: the domain and past it, `[-1, 1]` densely, and [`EXP_SPECIALS`].
pub fn exp() -> impl Iterator<Item = Vec<f32>> {
    let mut rng = Rng(6);
    let mut xs = rng.f32s(20_000, 100.0);
    xs.extend(rng.f32s(2000, 1.0));
    xs.extend(EXP_SPECIALS);
    core::iter::once(xs)
}

/// Feed-forward shapes around the 8-column loads, the groups of 16 tokens and past one
/// pass, and two the fused kernels refuse (`d_ff` not a multiple of 64, `d` over 1024);
/// GELU with biases and ReLU without.
pub fn ffn_q8() -> impl Iterator<Item = FfnQ8Case> {
    let mut rng = Rng(9);
    let shapes = [
        (1, 64, 1),
        (7, 64, 5),
        (8, 128, 16),
        (13, 64, 17),
        (40, 192, 33),
        (64, 64, 300),
        (384, 128, 20),
        (1024, 64, 3),
        (16, 100, 4),
        (1100, 64, 2),
    ];
    shapes.into_iter().flat_map(move |(d, d_ff, n)| {
        [(Activation::GeluErf, true), (Activation::Relu, false)].map(|(act, biased)| {
            let uq = rng.i8s(d_ff * d);
            let us = rng.scales(d_ff, 0.02);
            let ub = rng.f32s(d_ff, 0.5);
            let dq = rng.i8s(d_ff * d);
            let ds = rng.scales(d_ff, 0.02);
            let db = rng.f32s(d, 0.5);
            FfnQ8Case {
                d,
                d_ff,
                n,
                up: (uq, us, biased.then_some(ub)),
                down: (dq, ds, biased.then_some(db)),
                x: rng.activations(n * d),
                act,
            }
        })
    })
}

/// A tile of `nk` keys of head width `hd` (stride `hd` to `hd + 2`, scale `1 / sqrt(hd)`),
/// queries and keys in `[-2, 2)`, values in `[-3, 3)`, visibility by `pattern`: all,
/// causal-like, random, none.
pub fn attn_keys(rng: &mut Rng, hd: usize, nk: usize, pattern: u32) -> AttnKeys {
    let stride = hd + (rng.u32() % 3) as usize;
    let qt = rng.f32s(hd * ATTN_LANES, 2.0);
    let n = (nk.max(1) - 1) * stride + hd;
    let k = rng.f32s(n, 2.0);
    let v = rng.f32s(n, 3.0);
    let vis = core::array::from_fn(|j| match pattern {
        0 => u16::MAX,
        // Lanes l >= j see key j (a causal block).
        1 => u16::MAX << j.min(15),
        2 => rng.u32() as u16,
        _ => 0,
    });
    let scale = 1.0 / (hd as f32).sqrt();
    AttnKeys {
        hd,
        nk,
        stride,
        qt,
        k,
        v,
        vis,
        scale,
    }
}

/// Score tiles: head widths around the vector width and up to `ATTN_MAX_HEAD_DIM`, tiles
/// of 0 to 16 keys.
pub fn scores_tile() -> impl Iterator<Item = AttnKeys> {
    let mut rng = Rng(7);
    [1usize, 3, 4, 8, 31, 32, 64, 100, 128]
        .into_iter()
        .flat_map(|hd| (0..=ATTN_TILE).map(move |nk| (hd, nk)))
        .map(move |(hd, nk)| attn_keys(&mut rng, hd, nk, 0))
}

/// Dense tiles: four in a row (16, 5, 1 and 0 keys) with scores of a growing range, so
/// that later tiles raise the maxima, per head width and visibility pattern.
pub fn dense_tile() -> impl Iterator<Item = DenseCase> {
    let mut rng = Rng(8);
    [1usize, 3, 4, 8, 32, 36, 64, 100, 128]
        .into_iter()
        .flat_map(|hd| (0..4).map(move |pattern| (hd, pattern)))
        .map(move |(hd, pattern)| {
            let tiles = [(ATTN_TILE, 1.0f32), (5, 8.0), (1, 30.0), (0, 2.0)]
                .map(|(nk, m)| {
                    let c = attn_keys(&mut rng, hd, nk.max(1), pattern);
                    DenseTile {
                        s: rng.f32s(ATTN_BLOCK, m),
                        vis: c.vis,
                        nk,
                        v: c.v,
                        stride: c.stride,
                    }
                })
                .to_vec();
            DenseCase { hd, tiles }
        })
}

/// Lane-major scores: tiles of 0 to 16 keys, row strides past the tile.
pub fn scores_rows() -> impl Iterator<Item = (AttnKeys, usize)> {
    let mut rng = Rng(10);
    [1usize, 4, 7, 32, 64]
        .into_iter()
        .flat_map(|hd| (0..=ATTN_TILE).map(move |nk| (hd, nk)))
        .map(move |(hd, nk)| {
            let keys = attn_keys(&mut rng, hd, nk, 0);
            let rs = ATTN_TILE + (rng.u32() % 20) as usize;
            (keys, rs)
        })
}

/// Softmax of a block's lanes: used slots from none to `k` (lane 3 none), score ranges
/// that reach the exponential's limits, head widths around the vector width, rows in any
/// order, repeated rows.
pub fn softmax_lanes() -> impl Iterator<Item = SlotsCase> {
    let mut rng = Rng(11);
    [1usize, 3, 4, 16, 20, 32, 64, 100]
        .into_iter()
        .flat_map(|hd| [1usize, 5, 8, 32].map(|k| (hd, k)))
        .map(move |(hd, k)| {
            let nv = 40;
            let stride = hd + (rng.u32() % 3) as usize;
            let v = rng.f32s(nv * stride, 3.0);
            let m = [1.0f32, 30.0, 200.0][rng.u32() as usize % 3];
            let sc = rng.f32s(ATTN_LANES * k, m);
            let ix = (0..ATTN_LANES * k)
                .map(|_| (rng.u32() % nv as u32) as u16)
                .collect();
            let lens = (0..ATTN_LANES)
                .map(|l| {
                    if l == 3 {
                        0
                    } else {
                        rng.u32() % (k as u32 + 1)
                    }
                })
                .collect();
            SlotsCase {
                hd,
                k,
                stride,
                os: hd + 2,
                lens,
                sc,
                ix,
                v,
            }
        })
}

/// Block selection: four blocks (16, 3, 1 and 8 tiles) for `k` from 1 to the block
/// maximum, visibility all, causal-like, random, none and one key per tile, scores with
/// ties, `-0.0`, infinities and NaN.
pub fn topk_block() -> impl Iterator<Item = (Vec<KeyBlock>, usize)> {
    let mut rng = Rng(12);
    [1usize, 2, 7, 16, 17, 31, 32]
        .into_iter()
        .flat_map(|k| (0..5u32).map(move |pattern| (k, pattern)))
        .map(move |(k, pattern)| {
            let blocks = [16usize, 3, 1, 8]
                .map(|nt| KeyBlock {
                    row: (0..nt * ATTN_TILE)
                        .map(|_| match rng.u32() % 16 {
                            0 => f32::NAN,
                            1 => f32::INFINITY,
                            2 => f32::NEG_INFINITY,
                            3 => -0.0,
                            4 => 0.0,
                            5 | 6 => 1.5,
                            _ => rng.f32(8.0),
                        })
                        .collect(),
                    vis: (0..nt)
                        .map(|t| match pattern {
                            0 => u16::MAX,
                            1 => u16::MAX << (t % 16),
                            2 => rng.u32() as u16,
                            3 => 0,
                            _ => 1 << (rng.u32() % 16),
                        })
                        .collect(),
                })
                .to_vec();
            (blocks, k)
        })
}
