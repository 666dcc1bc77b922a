//! The kernel benchmark and exactness check of the `kernels` firmware bins (feature `defmt`):
//! instructions per multiply-accumulate of the matrix-vector kernels, instructions per token
//! of the firmware model with each kernel choice, and the check that the fast int8 kernels
//! (the Arm DSP ones on Cortex-M4) return what the generic ones do, bit for bit.
//!
//! Lines (parsed by `cargo xtask bench-target`):
//! - `check: <what> <cases> cases, <n> mismatches` (and `mismatch: ...` for the first ones);
//! - `bench: <kernel> <rows>x<cols> <instructions> instructions <macs> MACs`;
//! - `token: kernels <name> <instructions> instructions <tokens> tokens stack <bytes> bytes
//!   arena <bytes> bytes planned <bytes> bytes digest <hex>` (the arena's high-water mark and
//!   the plan of that kernel choice, which must be equal).

use topkit::ArenaStorage;
use topkit::kernels::{
    BLOCK, BlockType, Kernels, Matrix, Q8Rows, Weights, dot_i8_i8, matmul_i8_i8_token,
    matmul_q8_tokens, matvec, q8_blocks, q8_group_words, quantize_i8, quantize_i8_token,
};

use crate::{FAST_PLAN, OUT_LEN, Once, PEAK_BYTES, PLAN, infer_with};

/// Rows of the benchmark matrix (MiniLM's `d_model`).
pub const ROWS: usize = 384;
/// Columns of the benchmark matrix.
pub const COLS: usize = 384;
/// Longest vector of the exactness check (elements): `Q8_MAX_COLS`.
const MAX_LEN: usize = 4096;
/// The arena of the model runs: the larger plan of the two kernel choices.
const ARENA_BYTES: usize = if FAST_PLAN.peak_bytes > PEAK_BYTES {
    FAST_PLAN.peak_bytes
} else {
    PEAK_BYTES
};
/// The int8 activations of the fast matrix products below (one group of 16 tokens of up to
/// 2048 columns, which also holds `check_blocks`' 6 tokens of 100), f32 words.
const Q8_WORDS: usize = q8_group_words(2048);
/// Bytes of the block matrices: `ROWS x COLS` of the largest block (`Q8_0`, 34 bytes).
const BLOCK_BYTES: usize = ROWS * COLS / BLOCK * 34;

/// Everything the benchmark works on, in `.bss` (about 740 KB).
#[repr(C, align(16))]
pub struct Buffers {
    wf: [f32; ROWS * COLS],
    wq: [i8; ROWS * COLS + 4],
    ws: [f32; ROWS],
    x: [f32; COLS],
    xq: [i8; COLS],
    y: [f32; ROWS],
    yi: [i32; ROWS],
    yj: [i32; ROWS],
    a: [i8; MAX_LEN + 8],
    b: [i8; MAX_LEN + 8],
    arena: ArenaStorage<ARENA_BYTES>,
    q8: [f32; Q8_WORDS],
    wb: [u8; BLOCK_BYTES],
    out: [f32; OUT_LEN],
}

impl Buffers {
    /// All zero (`const`, for a `static`).
    pub const fn new() -> Self {
        Buffers {
            wf: [0.0; ROWS * COLS],
            wq: [0; ROWS * COLS + 4],
            ws: [0.0; ROWS],
            x: [0.0; COLS],
            xq: [0; COLS],
            y: [0.0; ROWS],
            yi: [0; ROWS],
            yj: [0; ROWS],
            a: [0; MAX_LEN + 8],
            b: [0; MAX_LEN + 8],
            arena: ArenaStorage::new(),
            q8: [0.0; Q8_WORDS],
            wb: [0; BLOCK_BYTES],
            out: [0.0; OUT_LEN],
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The benchmark's buffers (taken once by [`run`]).
pub static BUFFERS: Once<Buffers> = Once::new(Buffers::new());

/// xorshift32: seeded, the same on every target.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    fn i8(&mut self) -> i8 {
        (self.next() >> 24) as u8 as i8
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// Fill patterns of the check: seeded random, and the extremes (-128 and 127, whose products
/// are the largest and whose sign extension is the trap).
#[derive(Clone, Copy)]
enum Pattern {
    Random,
    MinMin,
    MinMax,
    MaxMax,
}

const PATTERNS: [Pattern; 4] = [
    Pattern::Random,
    Pattern::MinMin,
    Pattern::MinMax,
    Pattern::MaxMax,
];

fn fill(rng: &mut Rng, p: Pattern, a: &mut [i8], b: &mut [i8]) {
    for (x, y) in a.iter_mut().zip(b.iter_mut()) {
        (*x, *y) = match p {
            Pattern::Random => (rng.i8(), rng.i8()),
            Pattern::MinMin => (-128, -128),
            Pattern::MinMax => (-128, 127),
            Pattern::MaxMax => (127, 127),
        };
    }
}

/// Counts mismatches of one check and logs the first few.
struct Tally {
    what: &'static str,
    cases: u32,
    mismatches: u32,
}

impl Tally {
    fn new(what: &'static str) -> Self {
        Tally {
            what,
            cases: 0,
            mismatches: 0,
        }
    }
    fn case(&mut self, ok: bool, len: usize, offsets: (usize, usize), got: u32, want: u32) {
        self.cases += 1;
        if !ok {
            self.mismatches += 1;
            if self.mismatches <= 4 {
                defmt::println!(
                    "mismatch: {=str} len {=usize} offsets {=usize} {=usize} got {=u32:#010x} want {=u32:#010x}",
                    self.what,
                    len,
                    offsets.0,
                    offsets.1,
                    got,
                    want
                );
            }
        }
    }
    fn report(&self) -> u32 {
        defmt::println!(
            "check: {=str} {=u32} cases, {=u32} mismatches",
            self.what,
            self.cases,
            self.mismatches
        );
        self.mismatches
    }
}

const LONG: [usize; 12] = [
    127, 128, 129, 255, 256, 383, 384, 385, 1023, 1024, 1025, 4096,
];
const OFFSETS: [(usize, usize); 6] = [(0, 0), (1, 1), (1, 0), (0, 3), (2, 2), (3, 1)];

/// The exact dot of `Kernels::Fast.dot_i8` against `dot_i8_i8`: every length up to 67 and some
/// long ones, both slices at every alignment, random and extreme values.
fn check_dot(bufs: &mut Buffers, rng: &mut Rng) -> u32 {
    let mut t = Tally::new("dot_i8_i8");
    for len in (0..=67).chain(LONG) {
        for (oa, ob) in OFFSETS {
            for p in PATTERNS {
                let (a, b) = (&mut bufs.a[oa..oa + len], &mut bufs.b[ob..ob + len]);
                fill(rng, p, a, b);
                let (got, want) = (Kernels::Fast.dot_i8(a, b), dot_i8_i8(a, b));
                t.case(got == want, len, (oa, ob), got as u32, want as u32);
            }
        }
    }
    t.report()
}

/// `Kernels::Fast.matvec_i8` against one `dot_i8_i8` per row: odd shapes, rows that are not
/// word-aligned, more columns than one activation segment.
fn check_matvec(bufs: &mut Buffers, rng: &mut Rng) -> u32 {
    const SHAPES: [(usize, usize); 14] = [
        (1, 1),
        (3, 5),
        (7, 31),
        (5, 32),
        (4, 33),
        (6, 64),
        (3, 100),
        (9, 96),
        (2, 384),
        (3, 1023),
        (2, 1025),
        (2, 2100),
        (1, 4096),
        (ROWS, COLS),
    ];
    let mut t = Tally::new("matvec_i8_i8");
    for (rows, cols) in SHAPES {
        for off in [0, 1] {
            for p in PATTERNS {
                let q = &mut bufs.wq[off..off + rows * cols];
                let x = &mut bufs.a[..cols];
                for v in q.iter_mut() {
                    *v = match p {
                        Pattern::Random => rng.i8(),
                        Pattern::MaxMax => 127,
                        _ => -128,
                    };
                }
                fill(rng, p, &mut bufs.b[..cols], x);
                let x = &bufs.a[..cols];
                Kernels::Fast.matvec_i8(q, x, &mut bufs.yi[..rows]);
                for r in 0..rows {
                    let want = dot_i8_i8(&q[r * cols..(r + 1) * cols], x);
                    let got = bufs.yi[r];
                    t.case(got == want, cols, (off, r), got as u32, want as u32);
                }
            }
        }
    }
    t.report()
}

/// The int8-activation matmul of `Kernels::Fast` (one scale per token and block of 64
/// columns) against the generic one, compared as f32 bit patterns.
fn check_blocks(bufs: &mut Buffers, rng: &mut Rng) -> u32 {
    let mut t = Tally::new("matmul_i8_i8_token");
    let (rows, cols) = (7, 100);
    for v in bufs.wq[..rows * cols].iter_mut() {
        *v = rng.i8();
    }
    for v in bufs.ws[..rows].iter_mut() {
        *v = rng.f32();
    }
    let mut xs = [0.0f32; 6 * 100];
    for v in xs.iter_mut() {
        *v = rng.f32();
    }
    let w = Weights::I8 {
        q: &bufs.wq[..rows * cols],
        scales: &bufs.ws[..rows],
    };
    let Ok(w) = Matrix::new(rows, cols, w) else {
        defmt::println!("mismatch: matmul_i8_i8_token matrix shape");
        return 1;
    };
    let bias = [0.25f32; 7];
    for n in 1..=6 {
        let (mut got, mut want) = ([0.0f32; 6 * 7], [0.0f32; 6 * 7]);
        let x = &xs[..n * cols];
        let y = &mut got[..n * rows];
        Kernels::Fast.matmul(&w, x, n, Some(&bias), y, &mut bufs.q8);
        matmul_i8_i8_token(&w, x, n, Some(&bias), &mut want[..n * rows]);
        for (g, v) in got[..n * rows].iter().zip(&want[..n * rows]) {
            t.case(
                g.to_bits() == v.to_bits(),
                n,
                (0, 0),
                g.to_bits(),
                v.to_bits(),
            );
        }
    }
    t.report()
}

/// Fills `bufs.wb` with a `rows x cols` matrix of `ty`: the blocks of `w` (round to nearest),
/// then, unless `raw` is `None`, every byte after the f16 scale (and min) set to `raw(byte)`
/// (the integers of every value, `-128` included for `Q8_0`). Returns the byte length.
fn fill_blocks(
    bufs: &mut Buffers,
    ty: BlockType,
    (rows, cols): (usize, usize),
    mut raw: Option<&mut dyn FnMut() -> u8>,
) -> usize {
    let bb = ty.block_bytes();
    let len = rows * cols / BLOCK * bb;
    let head = if ty.has_min() { 4 } else { 2 };
    for (wb, out) in bufs.wf[..rows * cols]
        .chunks_exact(BLOCK)
        .zip(bufs.wb[..len].chunks_exact_mut(bb))
    {
        ty.quantize(wb, out);
        if let Some(f) = raw.as_mut() {
            out[head..].iter_mut().for_each(|v| *v = f());
        }
    }
    len
}

/// Block weights (every block type) times int8 activations: `Kernels::Fast.matmul_q8_rows`
/// (the DSP row loops on the M4F for `Q8_0`, `Q4_0`, `Q4_1`) against the generic
/// `matmul_q8_tokens`, compared as f32 bit patterns: whole rows of 1 to 64 blocks (more than
/// one activation segment of the DSP kernel), 1 and 3 tokens, with and without bias, weights
/// rounded from random values or raw random and extreme integers.
fn check_block_weights(bufs: &mut Buffers, rng: &mut Rng) -> u32 {
    const SHAPES: [(usize, usize); 7] = [
        (1, 32),
        (3, 64),
        (5, 96),
        (2, 160),
        (4, 384),
        (2, 1056),
        (1, 2048),
    ];
    let mut t = Tally::new("matmul_q8_blocks");
    for ty in BlockType::ALL {
        for (rows, cols) in SHAPES {
            for pattern in 0..4u8 {
                for n in [1usize, 3] {
                    for v in bufs.wf[..(rows + n) * cols].iter_mut() {
                        *v = rng.f32();
                    }
                    let len = match pattern {
                        0 => fill_blocks(bufs, ty, (rows, cols), None),
                        1 => fill_blocks(bufs, ty, (rows, cols), Some(&mut || rng.i8() as u8)),
                        2 => fill_blocks(bufs, ty, (rows, cols), Some(&mut || 0x80)),
                        _ => fill_blocks(bufs, ty, (rows, cols), Some(&mut || 0xff)),
                    };
                    let nb = q8_blocks(cols);
                    let mut xs = [0.0f32; 3 * 32];
                    let x = &bufs.wf[rows * cols..(rows + n) * cols];
                    let xq = &mut bufs.wq[..n * cols];
                    for i in 0..n {
                        let xi = &x[i * cols..(i + 1) * cols];
                        if pattern == 2 && i == 0 {
                            // The extremes of the activations too: every value -127.
                            xq[..cols].fill(-127);
                            xs[..nb].fill(1.0 / 127.0);
                        } else {
                            let (q, s) = (&mut xq[i * cols..(i + 1) * cols], &mut xs[i * nb..]);
                            quantize_i8_token(xi, q, &mut s[..nb]);
                        }
                    }
                    let x = Q8Rows {
                        q: &bufs.wq[..n * cols],
                        s: &xs[..n * nb],
                        n,
                    };
                    let Ok(w) = Matrix::new(
                        rows,
                        cols,
                        Weights::Blocks {
                            ty,
                            data: &bufs.wb[..len],
                        },
                    ) else {
                        defmt::println!("mismatch: matmul_q8_blocks matrix shape");
                        return t.report() + 1;
                    };
                    let bias = [0.375f32; 5];
                    let bias = (pattern & 1 == 1).then_some(&bias[..rows]);
                    let (mut got, mut want) = ([0.0f32; 15], [0.0f32; 15]);
                    Kernels::Fast.matmul_q8_rows(&w, x, bias, &mut got[..n * rows]);
                    matmul_q8_tokens(&w, x, bias, &mut want[..n * rows]);
                    for (g, v) in got[..n * rows].iter().zip(&want[..n * rows]) {
                        t.case(
                            g.to_bits() == v.to_bits(),
                            cols,
                            (ty.ggml_code() as usize, pattern as usize),
                            g.to_bits(),
                            v.to_bits(),
                        );
                    }
                }
            }
        }
    }
    t.report()
}

/// The block-weight products on the `ROWS x COLS` matrix `bufs.wf` times one int8 vector
/// (`bufs.x`, quantized by blocks of 64 columns), generic and `Kernels::Fast`, timed by
/// `clock`; the fast outputs are compared with the generic ones (f32 bits).
fn bench_block_weights(bufs: &mut Buffers, clock: &impl Fn() -> u64) -> u32 {
    let mut t = Tally::new("bench_block_rows");
    let mut xs = [0.0f32; COLS / 64];
    quantize_i8_token(&bufs.x, &mut bufs.xq, &mut xs);
    for (ty, fast, generic) in [
        (
            BlockType::Q8_0,
            "Q8_0 weights x int8 matvec, fast",
            "Q8_0 weights x int8 matvec, generic",
        ),
        (
            BlockType::Q4_0,
            "Q4_0 weights x int8 matvec, fast",
            "Q4_0 weights x int8 matvec, generic",
        ),
        (
            BlockType::Q4_1,
            "Q4_1 weights x int8 matvec, fast",
            "Q4_1 weights x int8 matvec, generic",
        ),
    ] {
        let len = fill_blocks(bufs, ty, (ROWS, COLS), None);
        let Ok(w) = Matrix::new(
            ROWS,
            COLS,
            Weights::Blocks {
                ty,
                data: &bufs.wb[..len],
            },
        ) else {
            defmt::println!("mismatch: bench block matrix shape");
            return 1;
        };
        let x = Q8Rows {
            q: &bufs.xq,
            s: &xs,
            n: 1,
        };
        let (y, want) = (&mut bufs.y, &mut [0.0f32; ROWS]);
        time(clock, generic, || matmul_q8_tokens(&w, x, None, want));
        time(clock, fast, || Kernels::Fast.matmul_q8_rows(&w, x, None, y));
        for (g, v) in y.iter().zip(want.iter()) {
            t.case(
                g.to_bits() == v.to_bits(),
                COLS,
                (ty.ggml_code() as usize, 0),
                g.to_bits(),
                v.to_bits(),
            );
        }
    }
    t.report()
}

/// Logs one `bench:` line: instructions of `f` (by `clock`) for `ROWS x COLS` MACs.
fn time(clock: &impl Fn() -> u64, what: &str, f: impl FnOnce()) {
    let t0 = clock();
    f();
    let instructions = clock().wrapping_sub(t0);
    defmt::println!(
        "bench: {=str} {=usize}x{=usize} {=u64} instructions {=usize} MACs",
        what,
        ROWS,
        COLS,
        instructions,
        ROWS * COLS
    );
}

/// The matrix-vector kernels on a seeded `ROWS x COLS` matrix, timed by `clock` (which must
/// count instructions). `fast` names what `Kernels::Fast` runs on this target.
fn bench_kernels(bufs: &mut Buffers, rng: &mut Rng, clock: &impl Fn() -> u64, fast: &str) -> u32 {
    for v in bufs.wf.iter_mut() {
        *v = rng.f32();
    }
    let q = &mut bufs.wq[..ROWS * COLS];
    for v in q.iter_mut() {
        *v = rng.i8();
    }
    for v in bufs.ws.iter_mut() {
        *v = rng.f32() / 127.0;
    }
    for v in bufs.x.iter_mut() {
        *v = rng.f32();
    }
    quantize_i8(&bufs.x, &mut bufs.xq);
    let (Ok(wf), Ok(wq)) = (
        Matrix::new(ROWS, COLS, Weights::F32(&bufs.wf)),
        Matrix::new(
            ROWS,
            COLS,
            Weights::I8 {
                q: &bufs.wq[..ROWS * COLS],
                scales: &bufs.ws,
            },
        ),
    ) else {
        defmt::println!("mismatch: bench matrix shape");
        return 1;
    };
    let (x, xq, y, q8) = (&bufs.x, &bufs.xq, &mut bufs.y, &mut bufs.q8);
    time(clock, "f32 matvec, generic", || matvec(&wf, x, None, y));
    time(
        clock,
        "int8 weights f32 activations matvec, generic",
        || matvec(&wq, x, None, y),
    );
    let q = &bufs.wq[..ROWS * COLS];
    let (yi, yj) = (&mut bufs.yi, &mut bufs.yj);
    time(clock, "int8 x int8 exact dot per row, generic", || {
        for (r, v) in yi.iter_mut().enumerate() {
            *v = dot_i8_i8(&q[r * COLS..(r + 1) * COLS], xq);
        }
    });
    let mut mismatches = 0;
    let mut t = Tally::new("bench rows");
    let compare = |t: &mut Tally, yj: &[i32]| {
        for (g, w) in yj.iter().zip(yi.iter()) {
            t.case(g == w, COLS, (0, 0), *g as u32, *w as u32);
        }
    };
    time(clock, "int8 x int8 exact dot per row, fast", || {
        for (r, v) in yj.iter_mut().enumerate() {
            *v = Kernels::Fast.dot_i8(&q[r * COLS..(r + 1) * COLS], xq);
        }
    });
    compare(&mut t, yj);
    time(clock, "int8 x int8 matvec, fast", || {
        Kernels::Fast.matvec_i8(q, xq, yj)
    });
    compare(&mut t, yj);
    mismatches += t.report();
    time(
        clock,
        "int8 weights, int8 activations by 64-blocks per token (Kernels::Fast matmul, n = 1)",
        || Kernels::Fast.matmul(&wq, x, 1, None, y, q8),
    );
    defmt::println!("fast: {=str}", fast);
    mismatches
}

/// Instructions per token and stack of the firmware model with each kernel choice (a fresh
/// arena each): the stack painted by `paint` (which returns the depth in use then) before the
/// run, the peak read by `peak` after it; the difference is what the inference itself takes.
/// The arena's high-water mark must equal the plan of that kernel choice (a mismatch
/// otherwise).
fn bench_model(
    bufs: &mut Buffers,
    clock: &impl Fn() -> u64,
    paint: &impl Fn() -> usize,
    peak: &impl Fn() -> usize,
) -> u32 {
    let mut failed = 0;
    let runs = [
        ("reference", Kernels::Reference, PLAN.peak_bytes),
        ("fast", Kernels::Fast, FAST_PLAN.peak_bytes),
    ];
    for (name, k, planned) in runs {
        let mut arena = bufs.arena.arena();
        let depth = paint();
        let r = infer_with(k, &mut arena, &mut bufs.out, clock);
        let stack = peak().saturating_sub(depth);
        match r {
            Ok(o) => {
                defmt::println!(
                    "token: kernels {=str} {=u64} instructions {=usize} tokens stack {=usize} bytes arena {=usize} bytes planned {=usize} bytes digest {=u32:#010x}",
                    name,
                    o.ticks,
                    o.tokens,
                    stack,
                    o.arena_bytes,
                    planned,
                    o.digest
                );
                if o.arena_bytes != planned {
                    defmt::println!("mismatch: {=str} arena differs from its plan", name);
                    failed += 1;
                }
            }
            Err(e) => {
                defmt::println!("mismatch: model error {}", defmt::Display2Format(&e));
                failed += 1;
            }
        }
    }
    failed
}

/// Runs the exactness checks, the kernel benchmark and the model with both kernel choices;
/// `clock` counts instructions, `fast` names what `Kernels::Fast` runs (the int8 dot) on this
/// target, `paint_stack` (returning the stack depth when it paints) and `stack_peak` measure
/// the stack of each model run. Returns the number of mismatches (0: every fast result equals the generic
/// one).
pub fn run(
    clock: impl Fn() -> u64,
    fast: &str,
    paint_stack: impl Fn() -> usize,
    stack_peak: impl Fn() -> usize,
) -> u32 {
    let Some(bufs) = BUFFERS.take() else {
        return 1;
    };
    let mut rng = Rng(0x2545_f491);
    let mut m = check_dot(bufs, &mut rng);
    m += check_matvec(bufs, &mut rng);
    m += check_blocks(bufs, &mut rng);
    m += check_block_weights(bufs, &mut rng);
    m += bench_kernels(bufs, &mut rng, &clock, fast);
    m += bench_block_weights(bufs, &clock);
    m += bench_model(bufs, &clock, &paint_stack, &stack_peak);
    defmt::println!("done: {=u32} mismatches", m);
    m
}
