//! The report through defmt (feature `defmt`): the same lines as the `write_*` functions,
//! which the host prints as text, so the decoded frames compare with the host's output line
//! for line. On bare-metal targets also the panic handler and, with feature `semihosting`,
//! the global logger that carries the frames to QEMU's semihosting stdout.

use crate::{
    DTYPE, FIRST, FLASH_BYTES, Input, MODEL, MODEL_NAME, OUT_LEN, Once, Outcome, PEAK_BYTES, PLAN,
    RUN, TEXT, infer, verdict,
};
use topkit::ArenaStorage;

const _: () = assert!(FIRST == 4, "`answer` logs four first values");

/// Logs the answer: the text of [`crate::write_answer`].
pub fn answer(o: &Outcome) {
    model_line!(
        defmt::println,
        [],
        "model: {=str} {=str} d_model {=usize} layers {=usize} heads {=usize} d_ff {=usize} seq {=usize} chunk {=usize} k_attn {} k_ff {} flash {=usize} bytes"
    );
    match o.input {
        Input::Text => defmt::println!("input: {=usize} token ids of {=str:?}", o.tokens, TEXT),
        Input::Seeded => defmt::println!("input: {=usize} seeded token ids", o.tokens),
    }
    defmt::println!(
        "output: {=usize} values, digest {=u32:#010x}",
        o.values,
        o.digest
    );
    let f = o.first.map(f32::to_bits);
    defmt::println!(
        "first: {=u32:#010x} {=u32:#010x} {=u32:#010x} {=u32:#010x} (f32 bits)",
        f[0],
        f[1],
        f[2],
        f[3]
    );
}

/// Logs the whole embedding as f32 bit patterns: the text of [`crate::write_embedding`].
pub fn embedding(out: &[f32]) {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is a u32.
    let bits = unsafe { core::slice::from_raw_parts(out.as_ptr().cast::<u32>(), out.len()) };
    defmt::println!("embedding: {=[?]:#010x}", bits);
}

/// Logs the arena line: the text of [`crate::write_arena`].
pub fn arena(o: &Outcome) {
    defmt::println!(
        "arena: measured {=usize} bytes, planned {=usize} bytes, {=str}",
        o.arena_bytes,
        PLAN.peak_bytes,
        verdict(o.arena_bytes, PLAN.peak_bytes)
    );
}

/// RAM of a firmware as its report states it, bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ram {
    /// Every static (`.data`, `.bss`): from the start of RAM to the stack region.
    pub statics: usize,
    /// The whole RAM of the board.
    pub total: usize,
}

/// The arena of the main firmware binaries: exactly the plan's peak, in `.bss`.
static ARENA: Once<ArenaStorage<PEAK_BYTES>> = Once::new(ArenaStorage::new());
/// Their answer: one sentence embedding (`d_model` f32).
static OUT: Once<[f32; OUT_LEN]> = Once::new([0.0; OUT_LEN]);

/// What the main firmware binaries run and report: [`crate::infer`] with `clock` into a
/// static arena of the plan's peak, the stack peak read right after (`stack_peak`, after the
/// caller painted the stack), then the answer, arena, embedding (text input), stack and `ram`
/// lines. Stops with status 1 on an error; returns the outcome for the caller's
/// `instructions:` line, whose counter differs per target. Call it once.
// Inlined into the entry function, so that the frames live during inference are those of a
// firmware that writes all of this in its `main` (the stack peak is reported).
#[inline(always)]
pub fn run_main(clock: impl Fn() -> u64, stack_peak: impl Fn() -> usize, ram: Ram) -> Outcome {
    let (Some(storage), Some(out)) = (ARENA.take(), OUT.take()) else {
        unreachable!("run_main runs once")
    };
    let outcome = match infer(&mut storage.arena(), out, clock) {
        Ok(o) => o,
        Err(e) => fail(&e),
    };
    let stack_bytes = stack_peak();
    report(&outcome, out, stack_bytes, ram);
    outcome
}

/// Logs the error and stops with status 1. Out of line, like [`report`], so that the frame
/// live during inference holds none of the logging's locals (the stack peak counts it).
#[inline(never)]
fn fail(e: &topkit::Error) -> ! {
    defmt::error!("error: {}", defmt::Display2Format(e));
    exit(1)
}

/// The lines of [`run_main`] after the inference.
#[inline(never)]
fn report(outcome: &Outcome, out: &[f32], stack_bytes: usize, ram: Ram) {
    answer(outcome);
    arena(outcome);
    if outcome.input == Input::Text {
        embedding(out);
    }
    defmt::println!("stack: peak {=usize} bytes", stack_bytes);
    defmt::println!(
        "ram: statics {=usize} + stack {=usize} = {=usize} bytes of {=usize}",
        ram.statics,
        stack_bytes,
        ram.statics + stack_bytes,
        ram.total
    );
}

/// Stops the firmware: semihosting exit with `code` under QEMU; on a board (RTT), a
/// breakpoint-free spin the debugger sees as a halt.
pub fn exit(code: i32) -> ! {
    #[cfg(all(feature = "semihosting", target_os = "none"))]
    semihosting::process::exit(code);
    #[cfg(not(all(feature = "semihosting", target_os = "none")))]
    {
        let _ = code;
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // PanicInfo displays as "panicked at <file>:<line>:<col>:\n<message>".
    defmt::error!("{}", defmt::Display2Format(info));
    exit(1)
}

#[cfg(all(feature = "semihosting", target_os = "none"))]
mod semihosting_logger {
    //! defmt frames (rzCOBS-encoded, as `defmt-rtt` sends them) written to semihosting
    //! stdout, buffered so that a frame costs a few semihosting calls, not one per byte.

    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};
    use semihosting::io::Write as _;

    /// Bytes buffered before a semihosting write.
    const BUF: usize = 256;

    struct State {
        encoder: defmt::Encoder,
        restore: critical_section::RestoreState,
        buf: [u8; BUF],
        len: usize,
    }

    struct Shared(UnsafeCell<State>);

    // SAFETY: the state is only touched between `acquire` and `release`, inside a critical
    // section, by one logger at a time (`TAKEN`).
    unsafe impl Sync for Shared {}

    static STATE: Shared = Shared(UnsafeCell::new(State {
        encoder: defmt::Encoder::new(),
        restore: critical_section::RestoreState::invalid(),
        buf: [0; BUF],
        len: 0,
    }));
    static TAKEN: AtomicBool = AtomicBool::new(false);

    /// The state, between `acquire` and `release`.
    ///
    /// # Safety
    /// The caller holds the logger (`TAKEN` set by it, in its critical section).
    #[allow(clippy::mut_from_ref)]
    unsafe fn state() -> &'static mut State {
        // SAFETY: the caller holds the logger, so this is the only reference.
        unsafe { &mut *STATE.0.get() }
    }

    fn flush(s: &mut State) {
        if s.len > 0 {
            if let Ok(mut out) = semihosting::io::stdout() {
                let _ = out.write_all(&s.buf[..s.len]);
            }
            s.len = 0;
        }
    }

    #[defmt::global_logger]
    struct Logger;

    // SAFETY: `acquire` takes a critical section and refuses re-entry, so frames never
    // interleave; `flush`, `write` and `release` are only called between it and `release`.
    unsafe impl defmt::Logger for Logger {
        fn acquire() {
            // SAFETY: released in `release`, with the state it returns.
            let restore = unsafe { critical_section::acquire() };
            if TAKEN.load(Ordering::Relaxed) {
                // A log while logging (a panic inside a `Format` impl): the frame in flight
                // cannot be completed, so stop at once with the failure status.
                semihosting::process::exit(1);
            }
            TAKEN.store(true, Ordering::Relaxed);
            // SAFETY: this context now holds the logger.
            let s = unsafe { state() };
            s.restore = restore;
            let (encoder, buf, len) = (&mut s.encoder, &mut s.buf, &mut s.len);
            encoder.start_frame(|b| push(buf, len, b));
        }

        unsafe fn flush() {
            // SAFETY: called while the logger is held (defmt's contract).
            flush(unsafe { state() });
        }

        unsafe fn release() {
            // SAFETY: called while the logger is held (defmt's contract).
            let s = unsafe { state() };
            let (encoder, buf, len) = (&mut s.encoder, &mut s.buf, &mut s.len);
            encoder.end_frame(|b| push(buf, len, b));
            flush(s);
            TAKEN.store(false, Ordering::Relaxed);
            // SAFETY: the state `acquire` saved, released once.
            unsafe { critical_section::release(s.restore) };
        }

        unsafe fn write(bytes: &[u8]) {
            // SAFETY: called while the logger is held (defmt's contract).
            let s = unsafe { state() };
            let (encoder, buf, len) = (&mut s.encoder, &mut s.buf, &mut s.len);
            encoder.write(bytes, |b| push(buf, len, b));
        }
    }

    /// Appends encoded bytes to the buffer, writing it out whenever it fills.
    fn push(buf: &mut [u8; BUF], len: &mut usize, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = (BUF - *len).min(bytes.len());
            buf[*len..*len + n].copy_from_slice(&bytes[..n]);
            *len += n;
            bytes = &bytes[n..];
            if *len == BUF {
                if let Ok(mut out) = semihosting::io::stdout() {
                    let _ = out.write_all(&buf[..]);
                }
                *len = 0;
            }
        }
    }
}
