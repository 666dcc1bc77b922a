//! Choosing the next token from a row of logits: greedy, or temperature and top-p (nucleus)
//! sampling with a seeded generator of our own. No allocation, no sort, no vocabulary-sized
//! buffer besides the logits themselves, which sampling overwrites.
//!
//! - **Greedy** ([`argmax`]): the largest logit; ties go to the lowest id, NaN is never
//!   chosen (unless every logit is NaN: then id 0).
//! - **Temperature** `T > 0`: token `i` has weight `w_i = exp((l_i - max) / T)`, probability
//!   `w_i / sum(w)`. `T = 0` is greedy, and so is a `T` whose inverse overflows f32 (below
//!   about 2.9e-39), the limit of the weights as `T` goes to 0.
//! - **Top-p** `p` in `(0, 1]`: only the nucleus can be drawn, the smallest set of most
//!   probable tokens whose probability mass is at least `p`; ties at its edge go to the lower
//!   ids. Precisely: order the tokens by (probability descending, id ascending) and keep the
//!   shortest prefix whose mass reaches `p`. Instead of sorting, the nucleus is found by a
//!   threshold search: the mass above a threshold, `S(t) = sum of w_i >= t`, only falls as `t`
//!   rises, and the nucleus is every token above the largest `t` with `S(t) >= p sum(w)`,
//!   plus, at that `t`, tied tokens in id order until the mass is reached. Non-negative f32
//!   values order like their bit patterns, so a bisection over the bits finds that `t` in at
//!   most 31 passes over the weights (sums in f64, in id order).
//! - The draw: `u` uniform in `[0, mass of the nucleus)` from [`Pcg32`], then the first token
//!   (in id order, nucleus only) where the running sum of weights exceeds `u`.
//!
//! Everything runs in a fixed order with `+ - * /` and the crate's `exp`, so a seed gives the
//! same tokens on every run and target of one build.

use crate::Error;
use crate::math;

/// PCG32 (XSH-RR variant: 64-bit LCG state, 32-bit output by xorshift and a random rotation;
/// M. E. O'Neill, "PCG: A Family of Simple Fast Space-Efficient Statistically Good Algorithms
/// for Random Number Generation", 2014). Small (16 bytes), fast, and its output is fixed by
/// its seed and stream on every target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

/// The LCG multiplier of PCG32.
const PCG_MULT: u64 = 6_364_136_223_846_793_005;
/// The stream [`Pcg32::new`] uses (the reference implementation's default increment / 2).
const DEFAULT_STREAM: u64 = 0x5851_f42d_4c95_7f2d >> 1;

impl Pcg32 {
    /// The generator for `seed` on the default stream.
    pub const fn new(seed: u64) -> Self {
        Self::with_stream(seed, DEFAULT_STREAM)
    }

    /// The generator for `seed` on stream `stream` (the reference `pcg32_srandom_r(seed,
    /// stream)`): different streams give independent sequences for the same seed.
    pub const fn with_stream(seed: u64, stream: u64) -> Self {
        let mut g = Pcg32 {
            state: 0,
            inc: (stream << 1) | 1,
        };
        g.step();
        g.state = g.state.wrapping_add(seed);
        g.step();
        g
    }

    const fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// The next 32 random bits.
    pub const fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.step();
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in `[0, 1)` with 53 random bits (two outputs).
    pub fn next_f64(&mut self) -> f64 {
        let hi = (self.next_u32() >> 5) as u64; // 27 bits
        let lo = (self.next_u32() >> 6) as u64; // 26 bits
        ((hi << 26) | lo) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The id of the largest value; ties go to the lowest id, NaN is never chosen (all NaN: 0).
/// `None` for an empty slice.
pub fn argmax(x: &[f32]) -> Option<u32> {
    if x.is_empty() {
        return None;
    }
    let mut best = 0;
    let mut best_v = f32::NAN;
    for (i, &v) in x.iter().enumerate() {
        // The first non-NaN value, then only strictly larger ones.
        if !v.is_nan() && (best_v.is_nan() || v > best_v) {
            best = i;
            best_v = v;
        }
    }
    // Vocabularies are at most 65536 tokens (crate::config::MAX_DIM), so the id fits in u32.
    Some(best as u32)
}

/// The nucleus of top-p sampling over weights `w` (non-negative, any scale), as found by
/// [`nucleus`]: the tokens with `w > above`, then those with `w == above` in id order while
/// the mass is below `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nucleus {
    /// The threshold: the weight of the least probable token of the nucleus.
    pub above: f32,
    /// `p * sum(w)`: the mass the nucleus must reach.
    pub target: f64,
    /// Total weight of the tokens with `w > above`.
    pub mass_above: f64,
}

impl Nucleus {
    /// Calls `f(id, w)` for every token of the nucleus, in id order, and returns its mass.
    pub fn for_each(&self, w: &[f32], mut f: impl FnMut(usize, f32)) -> f64 {
        // `edge` counts the mass with the tied tokens taken so far; `mass` what was taken.
        let (mut edge, mut mass) = (self.mass_above, 0.0);
        for (i, &wi) in w.iter().enumerate() {
            let take = if wi > self.above {
                true
            } else if wi == self.above && edge < self.target {
                edge += wi as f64;
                true
            } else {
                false
            };
            if take {
                mass += wi as f64;
                f(i, wi);
            }
        }
        mass
    }
}

/// `S(t)`: the total of the weights `>= t`, in f64, summed in id order.
fn mass_at_least(w: &[f32], t: f32) -> f64 {
    w.iter().filter(|&&x| x >= t).map(|&x| x as f64).sum()
}

/// The nucleus of top-p sampling (`p` in `(0, 1]`) over non-negative finite weights `w` that
/// are not all zero: the largest threshold `t` with `S(t) >= p * sum(w)`, found by bisection
/// over the bit patterns of non-negative f32 values (see the module docs).
pub fn nucleus(w: &[f32], p: f32) -> Nucleus {
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    let target = p as f64 * total;
    let max = w.iter().fold(0.0f32, |m, &x| if x > m { x } else { m });
    // Invariant: S(lo) >= target (S(0) is the total), S(hi) < target (nothing is above max).
    let (mut lo, mut hi) = (0u32, max.to_bits() + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if mass_at_least(w, f32::from_bits(mid)) >= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let above = f32::from_bits(lo);
    let mass_above = w.iter().filter(|&&x| x > above).map(|&x| x as f64).sum();
    Nucleus {
        above,
        target,
        mass_above,
    }
}

/// How [`Sampler::sample`] picks a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: Pcg32,
}

impl Sampler {
    /// Greedy decoding: always the largest logit ([`argmax`]).
    pub const fn greedy() -> Self {
        Sampler {
            temperature: 0.0,
            top_p: 1.0,
            rng: Pcg32::new(0),
        }
    }

    /// Temperature `T` (finite, `>= 0`; 0 is greedy) and top-p `p` (in `(0, 1]`; 1 keeps every
    /// token), drawing from [`Pcg32::new`]`(seed)`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a temperature or top-p out of range.
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Self, Error> {
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::InvalidConfig(
                "temperature must be finite and at least 0",
            ));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::InvalidConfig("top_p must be in (0, 1]"));
        }
        Ok(Sampler {
            temperature,
            top_p,
            rng: Pcg32::new(seed),
        })
    }

    /// `true` when this sampler always takes the largest logit.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Picks a token from `logits` (one per vocabulary id). Sampling overwrites `logits` with
    /// the unnormalised weights `exp((l - max) / T)`; greedy leaves them as they are.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] for an empty slice.
    pub fn sample(&mut self, logits: &mut [f32]) -> Result<u32, Error> {
        let Some(best) = argmax(logits) else {
            return Err(Error::ShapeMismatch {
                what: "logits",
                expected: 1,
                found: 0,
            });
        };
        let inv_t = 1.0 / self.temperature;
        // A temperature so small that 1/T overflows (below about 2.9e-39) is greedy: the
        // weights would be 0 * inf = NaN for the largest logit and 0 for every other.
        if self.is_greedy() || !inv_t.is_finite() {
            return Ok(best);
        }
        let max = logits[best as usize];
        if !max.is_finite() {
            return Ok(best);
        }
        for l in logits.iter_mut() {
            let w = math::exp((*l - max) * inv_t);
            // NaN logits get no weight; `max` itself gets exp(0) = 1, so the total is >= 1.
            *l = if w >= 0.0 { w } else { 0.0 };
        }
        let w = &*logits;
        let nuc = if self.top_p < 1.0 {
            nucleus(w, self.top_p)
        } else {
            Nucleus {
                above: -1.0,
                target: 0.0,
                mass_above: 0.0,
            }
        };
        let mass = nuc.for_each(w, |_, _| {});
        let u = self.rng.next_f64() * mass;
        let mut acc = 0.0f64;
        let mut pick = best;
        let mut done = false;
        nuc.for_each(w, |i, wi| {
            if !done {
                acc += wi as f64;
                pick = i as u32;
                done = acc > u;
            }
        });
        Ok(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of the reference `pcg32-demo` (seed 42, stream 54).
    #[test]
    fn pcg32_matches_the_reference() {
        let mut g = Pcg32::with_stream(42, 54);
        let want = [
            0xa15c_02b7u32,
            0x7b47_f409,
            0xba1d_3330,
            0x83d2_f293,
            0xbfa4_784b,
            0xcbed_606e,
        ];
        for w in want {
            assert_eq!(g.next_u32(), w);
        }
    }

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 2.0, f32::NAN, 2.5]), Some(3));
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), Some(0));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), Some(0));
    }

    #[test]
    fn nucleus_of_a_small_example() {
        // Probabilities 0.4, 0.1, 0.3, 0.2: p = 0.65 needs {0, 2}; p = 0.75 adds 3.
        let w = [4.0, 1.0, 3.0, 2.0];
        let ids = |p: f32| {
            let mut v = [usize::MAX; 4];
            let mut n = 0;
            nucleus(&w, p).for_each(&w, |i, _| {
                v[n] = i;
                n += 1;
            });
            (v, n)
        };
        assert_eq!(ids(0.65), ([0, 2, usize::MAX, usize::MAX], 2));
        assert_eq!(ids(0.75), ([0, 2, 3, usize::MAX], 3));
        assert_eq!(ids(0.35), ([0, usize::MAX, usize::MAX, usize::MAX], 1));
        assert_eq!(ids(1.0), ([0, 1, 2, 3], 4));
        // Ties at the edge: the lower id first.
        let w = [1.0, 2.0, 1.0, 1.0];
        let n = nucleus(&w, 0.55);
        let mut got = [0usize; 4];
        let mut k = 0;
        n.for_each(&w, |i, _| {
            got[k] = i;
            k += 1;
        });
        assert_eq!(&got[..k], &[0, 1]);
    }

    #[test]
    fn a_temperature_whose_inverse_overflows_is_greedy() {
        let logits = [0.5f32, 3.0, -1.0, 3.0, 2.0];
        for t in [1e-45f32, 1e-40, f32::MIN_POSITIVE / 8.0] {
            let mut s = Sampler::new(t, 1.0, 7).unwrap();
            let mut l = logits;
            assert_eq!(s.sample(&mut l).unwrap(), 1, "T = {t:e}");
            let mut s = Sampler::new(t, 0.5, 7).unwrap();
            let mut l = logits;
            assert_eq!(s.sample(&mut l).unwrap(), 1, "T = {t:e}, top-p 0.5");
        }
        // The smallest normal temperature still samples, and only among the largest logits.
        let mut s = Sampler::new(f32::MIN_POSITIVE, 1.0, 7).unwrap();
        for _ in 0..16 {
            let mut l = logits;
            assert!(matches!(s.sample(&mut l).unwrap(), 1 | 3));
        }
    }
}
