//! What every topkit firmware shares: the model embedded in flash with its memory plan, one
//! inference on the baked-in input, the report lines, and stack painting.
//!
//! The same code runs on the host (`examples/host.rs`) with the same math backend (micromath),
//! so the host's report lines are the firmware's expected output, bit for bit.
#![no_std]
#![deny(missing_docs)]

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use topkit::format::{PackedModel, ParseOptions, TensorName};
use topkit::kernels::{layer_norm, row_to_f32};
use topkit::{Arena, Error, LayerWeights, Model, forward};

/// Constants generated at build time (see `build.rs`).
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/plan.rs"));
    include!(concat!(env!("OUT_DIR"), "/inputs.rs"));
}

pub use generated::{DTYPE, FLASH_BYTES, MODEL, MODEL_NAME, PEAK_BYTES, PLAN, RUN, TOKENS};

/// Input hidden states: `RUN.seq_len x MODEL.d_model` f32 values.
pub const INPUT_LEN: usize = RUN.seq_len * MODEL.d_model;

/// Values printed in the report (the first of the output).
pub const FIRST: usize = 4;

/// 16-byte alignment for data embedded with `include_bytes!`, so the packed model's f32
/// tensors can be viewed in place.
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

/// The packed model file, in flash.
pub static MODEL_FILE: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.tkm")));

/// A `static` whose contents are handed out once, as `&'static mut` (the arena, the input),
/// without `static mut`.
pub struct Once<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reachable through the single `&mut` that `take` hands out.
unsafe impl<T: Send> Sync for Once<T> {}

impl<T> Once<T> {
    /// Wraps `value` (`const`, for a `static` initialiser).
    pub const fn new(value: T) -> Self {
        Once {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, the first time; `None` after. Call it from one context only (the firmware's
    /// `main`): the flag is a load and a store, since ARMv6-M has no compare-and-swap.
    #[allow(clippy::mut_from_ref)] // Sound: the flag lets only one `&mut` out, ever.
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.load(Ordering::Acquire) {
            return None;
        }
        self.taken.store(true, Ordering::Release);
        // SAFETY: the flag was clear, so no other reference to the value exists, and it is
        // now set, so none will be made.
        Some(unsafe { &mut *self.value.get() })
    }
}

/// What one inference measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// FNV-1a (32 bits) of the output's f32 bit patterns, little-endian, in order.
    pub digest: u32,
    /// Output values (`n x d_model`).
    pub values: usize,
    /// The first output values.
    pub first: [f32; FIRST],
    /// Arena high-water mark of the inference, bytes.
    pub arena_bytes: usize,
    /// Counter ticks spent in [`forward`] (the caller's clock: instructions or cycles).
    pub ticks: u64,
}

/// FNV-1a over the bit patterns of `x`: any difference in any bit changes it (with
/// overwhelming probability), unlike a sum.
pub fn digest(x: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for v in x {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// BERT embeddings of `tokens` (segment 0) into `out` (`tokens.len() x d_model`): token row +
/// position row + segment row, then the embedding LayerNorm.
pub fn embed(m: &PackedModel<'_>, tokens: &[u32], out: &mut [f32]) -> Result<(), Error> {
    let g = TensorName::global;
    let d = m.config().d_model;
    let (tok, pos, seg) = (
        m.matrix(g("tok_emb"))?,
        m.matrix(g("pos_emb"))?,
        m.matrix(g("seg_emb"))?,
    );
    let (gain, bias) = (m.vector(g("emb_norm.w"))?, m.vector(g("emb_norm.b"))?);
    if out.len() != tokens.len() * d || tokens.len() > pos.rows() {
        return Err(Error::ShapeMismatch {
            what: "embedding output",
            expected: tokens.len() * d,
            found: out.len(),
        });
    }
    // One row of scratch on the stack: d_model is a build-time constant of this firmware.
    let mut row = [0f32; MODEL.d_model];
    let row = row.get_mut(..d).ok_or(Error::InvalidConfig(
        "the packed model is wider than the firmware's MODEL",
    ))?;
    for (i, (&t, x)) in tokens.iter().zip(out.chunks_exact_mut(d)).enumerate() {
        if t as usize >= tok.rows() {
            return Err(Error::InvalidConfig("token id out of the vocabulary"));
        }
        row_to_f32(&tok, t as usize, x);
        for (w, r) in [(&pos, i), (&seg, 0)] {
            row_to_f32(w, r, row);
            for (a, b) in x.iter_mut().zip(row.iter()) {
                *a += *b;
            }
        }
        layer_norm(x, gain, bias, m.config().norm_eps);
    }
    Ok(())
}

/// Parses [`MODEL_FILE`] (checking its CRC), checks it against the build-time [`MODEL`],
/// embeds [`TOKENS`] into `input`, and runs [`forward`] over `arena` for [`RUN`].
/// `clock` is read just before and after `forward`.
pub fn infer(
    arena: &mut Arena<'_>,
    input: &mut [f32],
    clock: impl Fn() -> u64,
) -> Result<Outcome, Error> {
    let packed = PackedModel::parse_with(&MODEL_FILE.0, ParseOptions::default())?;
    if *packed.config() != MODEL {
        return Err(Error::InvalidConfig(
            "the packed model differs from the firmware's MODEL",
        ));
    }
    let first_layer = packed.layer_weights(0)?;
    let mut layers: [LayerWeights<'_>; MODEL.n_layers] = [first_layer; MODEL.n_layers];
    for (i, l) in layers.iter_mut().enumerate().skip(1) {
        *l = packed.layer_weights(i)?;
    }
    let model = Model::new(MODEL, &layers, packed.final_norm()?)?;
    embed(&packed, &TOKENS, input)?;

    let base = arena.high_water();
    let t0 = clock();
    let out = forward(&model, &RUN, input, None, arena)?;
    let ticks = clock().wrapping_sub(t0);
    let mut first = [0f32; FIRST];
    for (f, v) in first.iter_mut().zip(out.iter()) {
        *f = *v;
    }
    Ok(Outcome {
        digest: digest(out),
        values: out.len(),
        first,
        arena_bytes: arena.high_water() - base,
        ticks,
    })
}

/// The report lines that must be identical on every target: model, output digest, first
/// values (shortest round-trip decimal, so equal text means equal bits).
pub fn write_answer(w: &mut impl fmt::Write, o: &Outcome) -> fmt::Result {
    writeln!(
        w,
        "model: {} {} d_model {} layers {} heads {} d_ff {} seq {} chunk {} k_attn {:?} k_ff {:?} flash {} bytes",
        MODEL_NAME,
        DTYPE,
        MODEL.d_model,
        MODEL.n_layers,
        MODEL.n_heads,
        MODEL.d_ff,
        RUN.seq_len,
        RUN.chunk,
        RUN.k_attn,
        RUN.k_ff,
        FLASH_BYTES
    )?;
    writeln!(w, "output: {} values, digest {:#010x}", o.values, o.digest)?;
    write!(w, "first:")?;
    for v in &o.first {
        write!(w, " {v:?}")?;
    }
    writeln!(w)
}

/// The arena line: measured high-water mark against the plan.
pub fn write_arena(w: &mut impl fmt::Write, o: &Outcome) -> fmt::Result {
    writeln!(
        w,
        "arena: measured {} bytes, planned {} bytes, {}",
        o.arena_bytes,
        PLAN.peak_bytes,
        if o.arena_bytes == PLAN.peak_bytes {
            "equal"
        } else {
            "DIFFERENT"
        }
    )
}

pub mod stack;
