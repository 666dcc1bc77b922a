//! The `embedded-alloc` variant: the firmware does not use the build-time `MODEL`/`PLAN`
//! constants; it reads the configuration from the packed file at run time, plans the run,
//! and takes the arena (exactly `plan.peak_bytes`), the token ids and the output from a heap
//! in a few allocations made before inference. It prints the heap in use before and after
//! inference and the number of allocations during it, which must be 0.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../board.rs"]
mod board;

use alloc::vec;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::entry;
#[cfg(feature = "rtt")]
use defmt_rtt as _;
use embedded_alloc::LlffHeap;
use topkit::encoder::Encoder;
use topkit::format::{PackedModel, ParseOptions};
use topkit::{Arena, Error, LayerWeights, RunConfig};
use topkit_fw::{MODEL_FILE, Once, Outcome, RUN, digest, log, token_ids, verdict};

/// Heap size, bytes: room for the arena of any model whose plan fits, in this demo 256 KiB.
const HEAP_BYTES: usize = 256 * 1024;

static HEAP: LlffHeap = LlffHeap::empty();
static HEAP_MEM: Once<[MaybeUninit<u8>; HEAP_BYTES]> =
    Once::new([MaybeUninit::uninit(); HEAP_BYTES]);
/// Allocations made so far (the allocator counts them so inference can be shown to make none).
static ALLOCATIONS: AtomicU32 = AtomicU32::new(0);

/// The heap, counting allocations.
struct Counting;

// SAFETY: forwards to `HEAP`, a correct allocator; counting has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Load and store: ARMv6-M has no atomic add; allocation runs in thread mode only.
        ALLOCATIONS.store(ALLOCATIONS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { HEAP.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { HEAP.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// 16 bytes at the arena's alignment: a `Vec` of these is an aligned arena.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Block([u8; 16]);

/// What the run measured: the outcome, the plan's peak, heap in use before and after
/// inference (bytes), allocations during it.
struct Measured {
    outcome: Outcome,
    planned: usize,
    heap_before: usize,
    heap_after: usize,
    allocations: u32,
}

fn run(ids: &mut [u32]) -> Result<Measured, Error> {
    let packed = PackedModel::parse_with(&MODEL_FILE.0, ParseOptions::default())?;
    let config = *packed.config();
    let run: RunConfig = RUN;
    let plan = topkit::try_plan(&config, &run)?;

    // Every allocation, before inference.
    let mut layers: Vec<LayerWeights<'_>> = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        layers.push(packed.layer_weights(i)?);
    }
    let mut blocks = vec![Block([0; 16]); plan.peak_bytes.div_ceil(16)];
    let mut out = vec![0f32; config.d_model];
    // SAFETY: the blocks are initialised, 16-byte aligned plain bytes owned by `blocks`,
    // which outlives `bytes` and is not touched through another path meanwhile.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), blocks.len() * 16)
    };
    let mut arena = Arena::new(bytes)?;
    let enc = Encoder::from_packed(&packed, &layers)?;
    let (input, n) = token_ids(&packed, ids)?;

    let heap_before = HEAP.used();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let t0 = board::ticks();
    enc.embed(&run, &ids[..n], &mut arena, &mut out)?;
    let ticks = board::ticks() - t0;
    let during = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let heap_after = HEAP.used();

    let mut first = [0f32; topkit_fw::FIRST];
    first.iter_mut().zip(&out).for_each(|(f, v)| *f = *v);
    let outcome = Outcome {
        input,
        tokens: n,
        digest: digest(&out),
        values: out.len(),
        first,
        arena_bytes: arena.high_water(),
        ticks,
    };
    Ok(Measured {
        outcome,
        planned: plan.peak_bytes,
        heap_before,
        heap_after,
        allocations: during,
    })
}

#[entry]
fn main() -> ! {
    board::paint_stack();
    let Some(mem) = HEAP_MEM.take() else {
        unreachable!("main runs once")
    };
    // SAFETY: `mem` is a static region handed out once, used by nothing but the heap.
    unsafe { HEAP.init(mem.as_mut_ptr() as usize, HEAP_BYTES) };
    let p = cortex_m::Peripherals::take().unwrap();
    board::start_counter(p.SYST);

    let mut ids = vec![0u32; RUN.seq_len];
    let m = match run(&mut ids) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("error: {}", defmt::Display2Format(&e));
            log::exit(1);
        }
    };
    let o = &m.outcome;
    log::answer(o);
    defmt::println!(
        "arena: measured {=usize} bytes, planned {=usize} bytes (at run time), {=str}",
        o.arena_bytes,
        m.planned,
        verdict(o.arena_bytes, m.planned)
    );
    defmt::println!(
        "heap: {=usize} bytes in use before inference, {=usize} after, {=u32} allocations during it",
        m.heap_before,
        m.heap_after,
        m.allocations
    );
    let stack_bytes = board::stack_peak();
    let ram = board::ram();
    defmt::println!("stack: peak {=usize} bytes", stack_bytes);
    defmt::println!(
        "ram: statics {=usize} + stack {=usize} = {=usize} bytes of {=usize} (the heap's {=usize} bytes are a static)",
        ram.statics,
        stack_bytes,
        ram.statics + stack_bytes,
        ram.total,
        HEAP_BYTES
    );
    board::log_instructions(o);
    log::exit(0)
}
