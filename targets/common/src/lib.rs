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

use topkit::encoder::Encoder;
use topkit::format::{PackedModel, ParseOptions, TokenizerKind};
use topkit::kernels::Kernels;
use topkit::tokenizer::{WordPiece, WordPieceOptions};
use topkit::{Arena, Error, LayerWeights};

/// Constants generated at build time (see `build.rs`).
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/plan.rs"));
    include!(concat!(env!("OUT_DIR"), "/inputs.rs"));
}

pub use generated::{DTYPE, FLASH_BYTES, MODEL, MODEL_NAME, PEAK_BYTES, PLAN, RUN, TOKENS};

/// The plan of the same run with the layer stack on [`Kernels::Fast`] ([`infer_with`]): its
/// working buffers (int8 activations, attention blocks) in the arena, not on the stack. The
/// generated [`PLAN`] is the reference kernels' (what [`infer`] runs).
pub const FAST_PLAN: topkit::Plan = topkit::plan_with(&MODEL, &RUN, Kernels::Fast);

/// Values of the output: one sentence embedding.
pub const OUT_LEN: usize = MODEL.d_model;

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
    /// Where the token ids came from.
    pub input: Input,
    /// Token ids embedded.
    pub tokens: usize,
    /// FNV-1a (32 bits) of the output's f32 bit patterns, little-endian, in order.
    pub digest: u32,
    /// Output values (`d_model`: the pooled, normalised sentence embedding).
    pub values: usize,
    /// The first output values.
    pub first: [f32; FIRST],
    /// Arena high-water mark of the inference, bytes.
    pub arena_bytes: usize,
    /// Counter ticks spent embedding (the caller's clock: instructions or cycles).
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

/// The text embedded when the packed model has a WordPiece tokenizer (the first text of
/// `tests/data/minilm_golden.json`, so the answer can be checked against sentence-transformers).
pub const TEXT: &str = "A man is eating food.";

/// Where the token ids came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// [`TEXT`], tokenized on the target by the core's WordPiece.
    Text,
    /// [`TOKENS`], drawn at build time (the generated model has no tokenizer).
    Seeded,
}

/// The token ids of the run into `ids`: [`TEXT`] tokenized when the file has a WordPiece
/// tokenizer, else [`TOKENS`]. Returns how many.
// Out of line: inlined, its WordPiece state would widen the frame that stays live for the
// whole inference, and the firmware's measured stack peak with it.
#[inline(never)]
pub fn token_ids(packed: &PackedModel<'_>, ids: &mut [u32]) -> Result<(Input, usize), Error> {
    let tok = packed.tokenizer();
    if tok.kind() == TokenizerKind::WordPiece {
        let vocab = tok.vocab();
        let options = WordPieceOptions {
            lowercase: tok.lowercase(),
            strip_accents: tok.strip_accents(),
        };
        let wp = WordPiece::new(&vocab, options)?;
        return Ok((Input::Text, wp.encode(TEXT, ids)?.len));
    }
    let n = TOKENS.len().min(ids.len());
    ids[..n].copy_from_slice(&TOKENS[..n]);
    Ok((Input::Seeded, n))
}

/// Parses [`MODEL_FILE`] (checking its CRC), checks it against the build-time [`MODEL`], and
/// embeds the input ([`token_ids`]) with the core's [`Encoder`] into `out` (`d_model` values),
/// taking every working buffer from `arena`. `clock` is read just before and after the
/// encoder runs (embeddings, layers, pooling).
pub fn infer(
    arena: &mut Arena<'_>,
    out: &mut [f32],
    clock: impl Fn() -> u64,
) -> Result<Outcome, Error> {
    infer_with(Kernels::Reference, arena, out, clock)
}

/// [`infer`] with the layer stack run by `kernels` (`Fast`: int8 activations; its answer then
/// differs from the reference one, see [`Kernels::Fast`]).
pub fn infer_with(
    kernels: Kernels,
    arena: &mut Arena<'_>,
    out: &mut [f32],
    clock: impl Fn() -> u64,
) -> Result<Outcome, Error> {
    let packed = PackedModel::parse_with(&MODEL_FILE.0, ParseOptions::default())?;
    if *packed.config() != MODEL {
        return Err(Error::InvalidConfig(
            "the packed model differs from the firmware's MODEL",
        ));
    }
    // The layer views in an array of exactly MODEL.n_layers: `encoder::layers` returns a
    // `heapless::Vec` of MAX_LAYERS (48) of them, about 40 KB of stack.
    let first_layer = packed.layer_weights(0)?;
    let mut layers: [LayerWeights<'_>; MODEL.n_layers] = [first_layer; MODEL.n_layers];
    for (i, l) in layers.iter_mut().enumerate().skip(1) {
        *l = packed.layer_weights(i)?;
    }
    let enc = Encoder::from_packed(&packed, &layers)?.with_kernels(kernels);
    let mut ids = [0u32; RUN.seq_len];
    let (input, n) = token_ids(&packed, &mut ids)?;

    let base = arena.high_water();
    let t0 = clock();
    enc.embed(&RUN, &ids[..n], arena, out)?;
    let ticks = clock().wrapping_sub(t0);
    let mut first = [0f32; FIRST];
    for (f, v) in first.iter_mut().zip(out.iter()) {
        *f = *v;
    }
    Ok(Outcome {
        input,
        tokens: n,
        digest: digest(out),
        values: out.len(),
        first,
        arena_bytes: arena.high_water() - base,
        ticks,
    })
}

/// Invokes `$mac!($pre.., $fmt, <the values of the model: line>)`: the one list of what the
/// `model:` line reports, for [`write_answer`] (core::fmt) and `log::answer` (defmt), whose
/// format strings must each be a literal of their own syntax.
macro_rules! model_line {
    ($($mac:ident)::+, [$($pre:expr),*], $fmt:tt) => {
        $($mac)::+!(
            $($pre,)*
            $fmt,
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
        )
    };
}

/// The report lines that must be identical on every target: model, input, output digest,
/// first values (their f32 bit patterns, so equal text means equal bits). `log::answer` logs
/// the same text through defmt.
pub fn write_answer(w: &mut impl fmt::Write, o: &Outcome) -> fmt::Result {
    model_line!(
        writeln,
        [w],
        "model: {} {} d_model {} layers {} heads {} d_ff {} seq {} chunk {} k_attn {:?} k_ff {:?} flash {} bytes"
    )?;
    match o.input {
        Input::Text => writeln!(w, "input: {} token ids of {:?}", o.tokens, TEXT)?,
        Input::Seeded => writeln!(w, "input: {} seeded token ids", o.tokens)?,
    }
    writeln!(w, "output: {} values, digest {:#010x}", o.values, o.digest)?;
    write!(w, "first:")?;
    for v in &o.first {
        write!(w, " {:#010x}", v.to_bits())?;
    }
    writeln!(w, " (f32 bits)")
}

/// The whole embedding on one line, as f32 bit patterns (`embedding: [0x3d68c1a0, ...]`, the
/// text defmt's decoder gives for `{=[?]:#010x}`), for a check against a reference.
pub fn write_embedding(w: &mut impl fmt::Write, out: &[f32]) -> fmt::Result {
    write!(w, "embedding: [")?;
    for (i, v) in out.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(w, "{sep}{:#010x}", v.to_bits())?;
    }
    writeln!(w, "]")
}

/// The arena line: measured high-water mark against the plan.
pub fn write_arena(w: &mut impl fmt::Write, o: &Outcome) -> fmt::Result {
    writeln!(
        w,
        "arena: measured {} bytes, planned {} bytes, {}",
        o.arena_bytes,
        PLAN.peak_bytes,
        verdict(o.arena_bytes, PLAN.peak_bytes)
    )
}

/// The verdict of an arena line: `equal` when the measured high-water mark is the planned
/// peak (bytes), else `DIFFERENT`.
pub fn verdict(measured: usize, planned: usize) -> &'static str {
    if measured == planned {
        "equal"
    } else {
        "DIFFERENT"
    }
}

#[cfg(feature = "defmt")]
pub mod bench;
#[cfg(feature = "defmt")]
pub mod log;
pub mod stack;
