//! The seeded generator of the references and the model tests.

/// A small seeded generator (SplitMix64): test data from a fixed or proptest-chosen seed.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// A multiple of 1/4 in `[-1, 1]`: products and short sums of these are exact in f32, so
    /// an f32 score equals the f64 score and a selection cannot differ by rounding.
    pub fn quarter(&mut self) -> f32 {
        (self.next_u64() % 9) as f32 * 0.25 - 1.0
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.uniform(0.0, 1.0) < p
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `n` values from [`Rng::quarter`].
    pub fn quarters(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.quarter()).collect()
    }
}
