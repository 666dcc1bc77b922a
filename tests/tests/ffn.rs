//! Feed-forward blocks, dense and top-k, plain and gated, f32/f16/int8 weights, against the
//! naive f64 reference (which uses the dequantized weights, so only arithmetic differs).
//!
//! Tolerances, on `|out - ref| <= TOL * (1 + max |ref|)`:
//! - std build: [`TOL`] = 2e-6 (f32 rounding of the two products; largest seen 3.8e-7 over
//!   4000 cases of each test);
//! - micromath build: [`TOL`] = 3e-3 (`math::exp`, behind GELU, SiLU and tanh, has a relative
//!   error up to 2.4e-3, and `tanh`/`erf` an absolute error up to 1.1e-3; largest seen 7.0e-4
//!   over 4000 cases).
//!
//! Top-k against the reference uses inputs, weights and biases that are multiples of 1/4: the
//! pre-activations are then exact in f32, and the reference applies the engine's f32
//! activation to them, so both keep the same units. Where two engine runs should agree (`k_ff >= d_ff` vs dense, tokens per call) the
//! comparison is exact.

use half::f16;
use proptest::prelude::*;
use topkit::ffn::{DownLayout, FfnScratch, FfnWeights, ffn, ffn_with, scratch_bytes};
use topkit::kernels::{Kernels, Matrix, Weights, activate};
use topkit::{Activation, ArenaStorage, Error};
use topkit_tests::attention_ref::{RefFfn, Rng, ffn_ref, gelu_erf, gelu_tanh, relu, silu};

#[cfg(feature = "std")]
const TOL: f64 = 2e-6;
#[cfg(not(feature = "std"))]
const TOL: f64 = 3e-3;

const ARENA: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq)]
enum DType {
    F32,
    F16,
    I8,
}

/// Owned weight storage of one matrix.
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8(Vec<i8>, Vec<f32>),
}

impl Store {
    /// Stores `vals` (`rows x cols`) as `dt`. Int8 uses a per-row scale of max|row|/127, or
    /// 1/4 when `quarter` (then multiples of 1/4 in [-1, 1] are stored exactly).
    fn new(dt: DType, vals: &[f32], rows: usize, cols: usize, quarter: bool) -> Self {
        match dt {
            DType::F32 => Store::F32(vals.to_vec()),
            DType::F16 => Store::F16(vals.iter().map(|&v| f16::from_f32(v)).collect()),
            DType::I8 => {
                let mut q = Vec::with_capacity(rows * cols);
                let mut scales = Vec::with_capacity(rows);
                for r in 0..rows {
                    let row = &vals[r * cols..(r + 1) * cols];
                    let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let s = if quarter {
                        0.25
                    } else if m > 0.0 {
                        m / 127.0
                    } else {
                        1.0
                    };
                    q.extend(row.iter().map(|&v| (v / s).round() as i8));
                    scales.push(s);
                }
                Store::I8(q, scales)
            }
        }
    }

    fn matrix(&self, rows: usize, cols: usize) -> Matrix<'_> {
        let w = match self {
            Store::F32(d) => Weights::F32(d),
            Store::F16(d) => Weights::F16(d),
            Store::I8(q, s) => Weights::I8 { q, scales: s },
        };
        Matrix::new(rows, cols, w).unwrap()
    }

    /// The values the engine sees, in f64 (exact).
    fn dequant(&self, cols: usize) -> Vec<f64> {
        match self {
            Store::F32(d) => d.iter().map(|&v| v as f64).collect(),
            Store::F16(d) => d.iter().map(|v| v.to_f64()).collect(),
            Store::I8(q, s) => q
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * s[i / cols] as f64)
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    d: usize,
    f: usize,
    n: usize,
    k: usize,
    gated: bool,
    biases: bool,
    act: Activation,
    dt: DType,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=12, 1usize..=40, 1usize..=5, any::<u64>())
        .prop_flat_map(|(d, f, n, seed)| {
            (
                Just((d, f, n, seed)),
                1usize..=f + 2,
                any::<bool>(),
                any::<bool>(),
                prop_oneof![
                    Just(Activation::Relu),
                    Just(Activation::GeluErf),
                    Just(Activation::GeluTanh),
                    Just(Activation::Silu)
                ],
                prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::I8)],
            )
        })
        .prop_map(|((d, f, n, seed), k, gated, biases, act, dt)| Case {
            d,
            f,
            n,
            k,
            gated,
            biases,
            act,
            dt,
            seed,
        })
}

/// A block's weights and inputs, owned.
struct Block {
    up: Store,
    gate: Option<Store>,
    down_t: Store,
    up_bias: Option<Vec<f32>>,
    down_bias: Option<Vec<f32>>,
    x: Vec<f32>,
}

impl Block {
    /// Random block: uniform values, or multiples of 1/4 for `up`, `gate`, `x` and biases
    /// when `quarter`.
    fn new(c: &Case, quarter: bool) -> Self {
        let mut r = Rng::new(c.seed);
        let (d, f) = (c.d, c.f);
        let vals = |n: usize, r: &mut Rng| {
            if quarter {
                r.quarters(n)
            } else {
                r.vec(n, -1.0, 1.0)
            }
        };
        let up = Store::new(c.dt, &vals(f * d, &mut r), f, d, quarter);
        let gate = c
            .gated
            .then(|| Store::new(c.dt, &vals(f * d, &mut r), f, d, quarter));
        let down_t = Store::new(c.dt, &r.vec(f * d, -1.0, 1.0), f, d, false);
        let up_bias = c.biases.then(|| vals(f, &mut r));
        let down_bias = c.biases.then(|| r.vec(d, -1.0, 1.0));
        let x = vals(c.n * d, &mut r);
        Block {
            up,
            gate,
            down_t,
            up_bias,
            down_bias,
            x,
        }
    }

    fn weights(&self, c: &Case) -> FfnWeights<'_> {
        FfnWeights {
            up: self.up.matrix(c.f, c.d),
            up_bias: self.up_bias.as_deref(),
            gate: self.gate.as_ref().map(|g| g.matrix(c.f, c.d)),
            down_t: self.down_t.matrix(c.f, c.d),
            down_layout: DownLayout::Transposed,
            down_bias: self.down_bias.as_deref(),
            act: c.act,
        }
    }

    /// The reference over `x` (a slice of this block's tokens or all of them), with exact f64
    /// activations.
    fn reference(&self, c: &Case, x: &[f32], k_ff: Option<usize>) -> Vec<f64> {
        let act: fn(f64) -> f64 = match c.act {
            Activation::Relu => relu,
            Activation::GeluErf => gelu_erf,
            Activation::GeluTanh => gelu_tanh,
            Activation::Silu => silu,
        };
        let gated = c.gated;
        let hidden = move |g: f64, u: f64| if gated { act(g) * u } else { act(u) };
        self.reference_with(c, x, k_ff, &hidden)
    }

    /// The reference with the hidden value of a unit computed by `hidden(gate or up, up)`.
    fn reference_with(
        &self,
        c: &Case,
        x: &[f32],
        k_ff: Option<usize>,
        hidden: &dyn Fn(f64, f64) -> f64,
    ) -> Vec<f64> {
        let up = self.up.dequant(c.d);
        let gate = self.gate.as_ref().map(|g| g.dequant(c.d));
        let down_t = self.down_t.dequant(c.d);
        let ub: Option<Vec<f64>> = self
            .up_bias
            .as_ref()
            .map(|b| b.iter().map(|&v| v as f64).collect());
        let db: Option<Vec<f64>> = self
            .down_bias
            .as_ref()
            .map(|b| b.iter().map(|&v| v as f64).collect());
        let w = RefFfn {
            d_model: c.d,
            d_ff: c.f,
            up: &up,
            up_bias: ub.as_deref(),
            gate: gate.as_deref(),
            down_t: &down_t,
            down_bias: db.as_deref(),
        };
        ffn_ref(&w, hidden, x, k_ff)
    }
}

/// One call in a fresh arena, checking that the scratch takes exactly `scratch_bytes`.
fn run(
    w: &FfnWeights<'_>,
    x: &[f32],
    chunk: usize,
    k_ff: Option<usize>,
) -> Result<Vec<f32>, Error> {
    let mut storage = Box::new(ArenaStorage::<ARENA>::new());
    let mut arena = storage.arena();
    let d_ff = w.up.rows();
    let mut s = FfnScratch::new(&mut arena, d_ff, chunk, k_ff)?;
    assert_eq!(arena.high_water(), scratch_bytes(d_ff, chunk, k_ff));
    let mut out = vec![f32::NAN; x.len()];
    ffn(w, x, k_ff, &mut s, &mut out)?;
    Ok(out)
}

fn rel_err(out: &[f32], want: &[f64]) -> f64 {
    let scale = 1.0 + want.iter().fold(0f64, |m, v| m.max(v.abs()));
    out.iter()
        .zip(want)
        .map(|(&o, &w)| (o as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Dense equals the f64 reference with exact activations, within TOL.
    #[test]
    fn dense_matches_naive_reference(c in case()) {
        let b = Block::new(&c, false);
        let out = run(&b.weights(&c), &b.x, c.n, None).unwrap();
        let err = rel_err(&out, &b.reference(&c, &b.x, None));
        prop_assert!(err <= TOL, "error {err} > {TOL}");
    }

    /// Top-k with k_ff >= d_ff is the dense result bit for bit (same sum order).
    #[test]
    fn topk_with_all_units_equals_dense(c in case(), extra in 0usize..3) {
        let b = Block::new(&c, false);
        let w = b.weights(&c);
        let top = run(&w, &b.x, c.n, Some(c.f + extra)).unwrap();
        let dense = run(&w, &b.x, c.n, None).unwrap();
        prop_assert_eq!(top, dense);
    }

    /// Top-k (every activation, plain or gated, all weight types) equals the reference that
    /// keeps the k_ff units of largest |h| (lower index on ties), within TOL. Inputs, weights
    /// and biases are multiples of 1/4, so pre-activations are exact in f32; the reference
    /// applies the engine's own f32 activation to them, so both keep the same units and the
    /// test checks selection and summation (activation accuracy is the dense test's job).
    #[test]
    fn topk_matches_naive_reference(c in case()) {
        let b = Block::new(&c, true);
        let out = run(&b.weights(&c), &b.x, c.n, Some(c.k)).unwrap();
        let (act, gated) = (c.act, c.gated);
        let hidden = move |g: f64, u: f64| {
            let (g, u) = (g as f32, u as f32);
            (if gated { activate(act, g) * u } else { activate(act, u) }) as f64
        };
        let err = rel_err(&out, &b.reference_with(&c, &b.x, Some(c.k), &hidden));
        prop_assert!(err <= TOL, "error {err} > {TOL}");
    }

    /// Each token's output is independent of the others in its call: token by token equals
    /// all at once, bit for bit, dense and top-k.
    #[test]
    fn tokens_per_call_do_not_change_results(c in case()) {
        let b = Block::new(&c, false);
        let w = b.weights(&c);
        for k in [Some(c.k), None] {
            let all = run(&w, &b.x, c.n + 1, k).unwrap();
            for t in 0..c.n {
                let one = run(&w, &b.x[t * c.d..(t + 1) * c.d], 1, k).unwrap();
                prop_assert_eq!(&all[t * c.d..(t + 1) * c.d], &one[..]);
            }
        }
    }
}

/// The kept units are those of largest |h|, negative ones included, ties to the lower index;
/// only their `down_t` rows are summed. Exact: every value is a small dyadic number.
#[test]
fn topk_keeps_largest_magnitude() {
    // d_model = 1, x = [1]; a gated block with ReLU gate weights 1: h_j = up_j.
    let up = [0.5f32, -3.0, 2.0, -0.5, 2.0, 0.25];
    let gate = [1.0f32; 6];
    // down_t row j is 2^j: the output's bits show which units were summed.
    let down: Vec<f32> = (0..6).map(|j| (1 << j) as f32).collect();
    let w = FfnWeights {
        up: Matrix::new(6, 1, Weights::F32(&up)).unwrap(),
        up_bias: None,
        gate: Some(Matrix::new(6, 1, Weights::F32(&gate)).unwrap()),
        down_t: Matrix::new(6, 1, Weights::F32(&down)).unwrap(),
        down_layout: DownLayout::Transposed,
        down_bias: None,
        act: Activation::Relu,
    };
    let expect = |units: &[usize]| units.iter().map(|&j| up[j] * down[j]).sum::<f32>();
    assert_eq!(run(&w, &[1.0], 1, Some(1)).unwrap(), [expect(&[1])]);
    // Units 2 and 4 tie at 2.0: the lower index wins.
    assert_eq!(run(&w, &[1.0], 1, Some(2)).unwrap(), [expect(&[1, 2])]);
    assert_eq!(run(&w, &[1.0], 1, Some(3)).unwrap(), [expect(&[1, 2, 4])]);
    // 0.5 and -0.5 tie in magnitude.
    assert_eq!(
        run(&w, &[1.0], 1, Some(4)).unwrap(),
        [expect(&[0, 1, 2, 4])]
    );
}

/// The scratch is exactly the documented formula, and what `new` takes.
#[test]
fn scratch_bytes_formula() {
    let pad = |b: usize| b.div_ceil(16) * 16;
    for d_ff in [1usize, 7, 64, 1536] {
        for c in [1usize, 3, 16] {
            for k in [None, Some(1), Some(5), Some(64), Some(4000)] {
                let want = match k {
                    Some(k) => {
                        let k = k.min(d_ff);
                        pad(4 * c * k) + pad(2 * c * k) + pad(4 * c)
                    }
                    None => 0,
                };
                assert_eq!(scratch_bytes(d_ff, c, k), want);
                let mut storage = Box::new(ArenaStorage::<{ 1 << 18 }>::new());
                let mut arena = storage.arena();
                FfnScratch::new(&mut arena, d_ff, c, k).unwrap();
                assert_eq!(arena.high_water(), want);
            }
        }
    }
    const B: usize = scratch_bytes(1536, 16, Some(64));
    assert_eq!(B, 16 * 64 * 6 + 64);
    assert_eq!(
        scratch_bytes(1 << 16, usize::MAX, Some(1 << 16)),
        usize::MAX
    );
}

/// Bad inputs are typed errors, never panics.
#[test]
fn bad_inputs_are_errors() {
    let up = [0.5f32; 12];
    let down = [0.25f32; 12];
    let ub = [0.1f32; 4];
    let db = [0.1f32; 3];
    fn m(d: &[f32], r: usize, c: usize) -> Matrix<'_> {
        Matrix::new(r, c, Weights::F32(d)).unwrap()
    }
    let good = FfnWeights {
        up: m(&up, 4, 3),
        up_bias: Some(&ub),
        gate: None,
        down_t: m(&down, 4, 3),
        down_layout: DownLayout::Transposed,
        down_bias: Some(&db),
        act: Activation::GeluErf,
    };
    let x = [1.0f32; 6];
    assert!(run(&good, &x, 2, Some(2)).is_ok());

    let shape = |r: Result<Vec<f32>, Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let config = |r: Result<Vec<f32>, Error>| matches!(r, Err(Error::InvalidConfig(_)));
    assert!(shape(run(&good, &x[..5], 2, None)));
    assert!(shape(run(&good, &x, 1, None)), "more tokens than the chunk");
    // `good` with one part of the wrong size.
    let mut bad = [good; 4];
    bad[0].down_t = m(&down, 3, 4);
    bad[1].gate = Some(m(&up, 2, 6));
    bad[2].up_bias = Some(&ub[..3]);
    bad[3].down_bias = Some(&db[..2]);
    for w in &bad {
        assert!(shape(run(w, &x, 2, None)), "{w:?}");
    }
    assert!(config(run(&good, &x, 2, Some(0))));
    assert!(config(run(&good, &x, 0, None)));
    assert!(config(run(
        &FfnWeights {
            up: m(&[], 4, 0),
            down_t: m(&[], 4, 0),
            ..good
        },
        &[],
        1,
        None
    )));

    // A scratch made for dense or a smaller k_ff is refused.
    let mut storage = Box::new(ArenaStorage::<ARENA>::new());
    let mut arena = storage.arena();
    let mut s = FfnScratch::new(&mut arena, 4, 2, Some(2)).unwrap();
    let mut out = [0f32; 6];
    assert!(matches!(
        ffn(&good, &x, Some(3), &mut s, &mut out),
        Err(Error::InvalidConfig(_))
    ));
    let mut d = FfnScratch::new(&mut arena, 4, 2, None).unwrap();
    assert!(matches!(
        ffn(&good, &x, Some(1), &mut d, &mut out),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        ffn(&good, &x, None, &mut d, &mut out[..5]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        FfnScratch::new(&mut arena, 1 << 16, 1 << 10, Some(1 << 10)),
        Err(Error::ArenaTooSmall { .. })
    ));
    // The fast kernels need the fast part of the scratch (FfnScratch::new_fast).
    assert!(matches!(
        ffn_with(Kernels::Fast, &good, &x, None, &mut d, &mut out),
        Err(Error::InvalidConfig(_))
    ));
    let mut f = FfnScratch::new_fast(&mut arena, 3, 4, 2, None, false).unwrap();
    assert!(ffn_with(Kernels::Fast, &good, &x, None, &mut f, &mut out).is_ok());
    assert!(matches!(
        FfnScratch::new_fast(&mut arena, 1 << 17, 4, 2, None, false),
        Err(Error::InvalidConfig(_))
    ));
}

/// The down projection in ggml's layout (`d_model x d_ff`, [`DownLayout::Columns`]) gives the
/// bits of its transpose ([`DownLayout::Transposed`]) with the reference kernels, for f32,
/// f16 and every block type (blocks along `d_ff`; the transpose is the dequantized f32
/// matrix, which is what the reference kernels compute with), dense and top-k, plain and
/// gated; int8 (whose per-row scales multiply `h` first, `(h s) q` instead of `h (s q)`) is
/// within rounding of it; the fast kernels stay close to the reference.
#[test]
fn down_layouts_give_the_same_bits() {
    use topkit::ffn::{FfnScratch as S, fast_scratch_bytes};
    use topkit::kernels::{BlockType, DType};
    use topkit_tests::kernels_ref::TestMatrix;
    let (d, f, n) = (64, 96, 11);
    let mut r = Rng::new(0x5eed_d0e5);
    let (up_vals, gate_vals) = (r.vec(f * d, -0.5, 0.5), r.vec(f * d, -0.5, 0.5));
    let down_vals = r.vec(d * f, -1.0, 1.0);
    let x = r.vec(n * d, -1.0, 1.0);
    let db = r.vec(d, -0.1, 0.1);
    let mut dtypes = vec![DType::F32, DType::F16, DType::I8];
    dtypes.extend(BlockType::ALL.map(DType::Block));
    for dt in dtypes {
        // Columns: d x f in dt. Transposed: its dequantized values, transposed, in f32 (for
        // int8 the per-row scales of the d x f matrix do not survive a transpose).
        let down = TestMatrix::quantize(dt, d, f, &down_vals);
        let mut t = vec![0f32; f * d];
        for i in 0..d {
            for j in 0..f {
                t[j * d + i] = down.get(i, j) as f32;
            }
        }
        let down_t = TestMatrix::quantize(DType::F32, f, d, &t);
        // up and gate in f32, and for the block types also in the same blocks (the fast
        // kernels' int8-activation path for a whole block model).
        for (gated, blocks_up) in [(false, false), (true, false), (false, true), (true, true)] {
            let up_dt = if blocks_up { dt } else { DType::F32 };
            if blocks_up && !matches!(dt, DType::Block(_)) {
                continue;
            }
            let up = TestMatrix::quantize(up_dt, f, d, &up_vals);
            let gate = TestMatrix::quantize(up_dt, f, d, &gate_vals);
            let cols = FfnWeights {
                up: up.matrix(),
                up_bias: None,
                gate: gated.then(|| gate.matrix()),
                down_t: down.matrix(),
                down_layout: DownLayout::Columns,
                down_bias: Some(&db),
                act: Activation::Silu,
            };
            let rows = FfnWeights {
                down_t: down_t.matrix(),
                down_layout: DownLayout::Transposed,
                ..cols
            };
            for k_ff in [None, Some(7)] {
                let a = run(&cols, &x, n, k_ff).unwrap();
                let b = run(&rows, &x, n, k_ff).unwrap();
                let scale = 1.0 + a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = |o: &[f32]| {
                    o.iter()
                        .zip(&a)
                        .map(|(o, w)| (o - w).abs())
                        .fold(0.0, f32::max)
                };
                if dt == DType::I8 {
                    assert!(
                        err(&b) <= 1e-5 * scale,
                        "{dt:?} gated {gated} k_ff {k_ff:?}"
                    );
                } else {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "{dt:?} gated {gated} k_ff {k_ff:?}");
                }
                // The fast kernels on the Columns layout, against the reference.
                let mut storage = Box::new(ArenaStorage::<ARENA>::new());
                let mut arena = storage.arena();
                let mut s = S::new_fast(&mut arena, d, f, n, k_ff, gated).unwrap();
                assert_eq!(
                    arena.high_water(),
                    scratch_bytes(f, n, k_ff) + fast_scratch_bytes(d, f, n, gated)
                );
                let mut out = vec![f32::NAN; x.len()];
                ffn_with(Kernels::Fast, &cols, &x, k_ff, &mut s, &mut out).unwrap();
                let e = err(&out);
                // int8 activations (blocks_up) round each token to 1/254 of its largest value.
                let tol = if blocks_up { 2e-2 } else { 1e-5 };
                assert!(
                    e <= tol * scale,
                    "{dt:?} gated {gated} blocks {blocks_up} k_ff {k_ff:?}: {e}"
                );
            }
        }
        // The wrong shape for the layout is refused.
        let up = TestMatrix::quantize(DType::F32, f, d, &up_vals);
        let bad = FfnWeights {
            up: up.matrix(),
            up_bias: None,
            gate: None,
            down_t: down_t.matrix(),
            down_layout: DownLayout::Columns,
            down_bias: None,
            act: Activation::Silu,
        };
        assert!(matches!(
            run(&bad, &x, n, None),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

/// The fast kernels on a block-typed down projection in ggml's layout stay within the int8
/// activations' rounding of the reference for every token count (one token, a few, more than
/// a group of 16 in several passes) and chunk (a chunk of one leaves the gated block's fast
/// scratch too small for a token's hidden row: the per-block projection), with `d_ff` above
/// one block of hidden units (256).
#[test]
fn block_columns_fast_matches_reference() {
    use topkit::ffn::fast_scratch_bytes;
    use topkit::kernels::{BlockType, DType};
    use topkit_tests::kernels_ref::TestMatrix;
    let (d, f) = (64, 320);
    let mut r = Rng::new(0xd0_5eed);
    let (up_vals, gate_vals) = (r.vec(f * d, -0.5, 0.5), r.vec(f * d, -0.5, 0.5));
    let down_vals = r.vec(d * f, -1.0, 1.0);
    let db = r.vec(d, -0.1, 0.1);
    for ty in [BlockType::Q4_1, BlockType::Q8_0, BlockType::Q5_0] {
        let dt = DType::Block(ty);
        let (up, gate) = (
            TestMatrix::quantize(dt, f, d, &up_vals),
            TestMatrix::quantize(dt, f, d, &gate_vals),
        );
        let down = TestMatrix::quantize(dt, d, f, &down_vals);
        for gated in [false, true] {
            let w = FfnWeights {
                up: up.matrix(),
                up_bias: None,
                gate: gated.then(|| gate.matrix()),
                down_t: down.matrix(),
                down_layout: DownLayout::Columns,
                down_bias: Some(&db),
                act: Activation::Silu,
            };
            for n in [1, 3, 16, 37] {
                let x = r.vec(n * d, -1.0, 1.0);
                let want = run(&w, &x, n, None).unwrap();
                let scale = 1.0 + want.iter().fold(0f32, |m, v| m.max(v.abs()));
                for chunk in [1, 2, n] {
                    let mut storage = Box::new(ArenaStorage::<ARENA>::new());
                    let mut arena = storage.arena();
                    let mut s = FfnScratch::new_fast(&mut arena, d, f, chunk, None, gated).unwrap();
                    assert_eq!(arena.high_water(), fast_scratch_bytes(d, f, chunk, gated));
                    let mut out = vec![f32::NAN; x.len()];
                    for (xc, oc) in x.chunks(chunk * d).zip(out.chunks_mut(chunk * d)) {
                        ffn_with(Kernels::Fast, &w, xc, None, &mut s, oc).unwrap();
                    }
                    let e = out
                        .iter()
                        .zip(&want)
                        .map(|(o, w)| (o - w).abs())
                        .fold(0.0, f32::max);
                    // int8 activations round each token (and hidden row) to 1/254 of its
                    // largest value per block of 64.
                    assert!(
                        e <= 2e-2 * scale,
                        "{ty:?} gated {gated} n {n} chunk {chunk}: {e} (scale {scale})"
                    );
                    assert!(
                        e > 0.0 || n == 0,
                        "{ty:?}: the fast path is not the reference"
                    );
                }
            }
        }
    }
}

/// A block-typed `down_t` ([`DownLayout::Transposed`], blocks along `d_model`), with int8 or
/// block `up`/`gate`: the fast kernels (int8 activations into the units, the rows of `down_t`
/// converted to f32 a few at a time for all the tokens) stay within the int8 activation
/// rounding of the reference, dense, plain and gated.
#[test]
fn block_down_t_fast_is_close_to_the_reference() {
    use topkit::ffn::{FfnScratch as S, fast_scratch_bytes};
    use topkit::kernels::{BlockType, DType};
    use topkit_tests::kernels_ref::TestMatrix;
    let (d, f, n) = (64, 96, 19);
    let mut r = Rng::new(0xb10c_d0e5);
    let (up_vals, gate_vals) = (r.vec(f * d, -0.5, 0.5), r.vec(f * d, -0.5, 0.5));
    let down_vals = r.vec(f * d, -1.0, 1.0);
    let x = r.vec(n * d, -1.0, 1.0);
    let db = r.vec(d, -0.1, 0.1);
    for ty in BlockType::ALL {
        let down_t = TestMatrix::quantize(DType::Block(ty), f, d, &down_vals);
        for up_dt in [DType::I8, DType::Block(ty)] {
            for gated in [false, true] {
                let up = TestMatrix::quantize(up_dt, f, d, &up_vals);
                let gate = TestMatrix::quantize(up_dt, f, d, &gate_vals);
                let w = FfnWeights {
                    up: up.matrix(),
                    up_bias: None,
                    gate: gated.then(|| gate.matrix()),
                    down_t: down_t.matrix(),
                    down_layout: DownLayout::Transposed,
                    down_bias: Some(&db),
                    act: Activation::Silu,
                };
                let a = run(&w, &x, n, None).unwrap();
                let scale = 1.0 + a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let mut storage = Box::new(ArenaStorage::<ARENA>::new());
                let mut arena = storage.arena();
                let mut s = S::new_fast(&mut arena, d, f, n, None, gated).unwrap();
                assert_eq!(
                    arena.high_water(),
                    scratch_bytes(f, n, None) + fast_scratch_bytes(d, f, n, gated)
                );
                let mut out = vec![f32::NAN; x.len()];
                ffn_with(Kernels::Fast, &w, &x, None, &mut s, &mut out).unwrap();
                let e = out
                    .iter()
                    .zip(&a)
                    .map(|(o, w)| (o - w).abs())
                    .fold(0.0, f32::max);
                // int8 activations round each token to 1/254 of its largest value.
                assert!(e <= 2e-2 * scale, "{ty:?} up {up_dt:?} gated {gated}: {e}");
            }
        }
    }
}
