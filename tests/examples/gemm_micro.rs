//! Micro-benchmark of the host fast matrix products (not a test): MiniLM shapes, one thread.
//! `cargo run --release -p topkit-tests --features std --example gemm_micro`

use std::time::Instant;
use topkit::kernels::{Kernels, Matrix, Weights, q8_scratch_bytes};

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`), so that the
/// numbers hold on a loaded machine; wall time where that file is missing.
fn cpu_ns(start: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| start.elapsed().as_nanos() as f64)
}

fn main() {
    let origin = Instant::now();
    let mut s = 1u32;
    let mut next = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        s
    };
    for &(rows, cols, n) in &[
        (384, 384, 16),
        (384, 384, 128),
        (1536, 384, 16),
        (384, 1536, 16),
    ] {
        let q: Vec<i8> = (0..rows * cols).map(|_| (next() >> 24) as i8).collect();
        let wf: Vec<f32> = q.iter().map(|&v| v as f32 / 64.0).collect();
        let sc = vec![0.01f32; rows];
        let x: Vec<f32> = (0..n * cols)
            .map(|_| (next() >> 8) as f32 / 16_777_216.0 - 0.5)
            .collect();
        let bias = vec![0.1f32; rows];
        let mut y = vec![0f32; n * rows];
        // The int8 activations' scratch, as the memory plan sizes it.
        let mut scratch = vec![0f32; q8_scratch_bytes(cols, n) / 4];
        for (name, w, k) in [
            (
                "int8 fast",
                Matrix::new(rows, cols, Weights::I8 { q: &q, scales: &sc }).unwrap(),
                Kernels::Fast,
            ),
            (
                "f32 fast",
                Matrix::new(rows, cols, Weights::F32(&wf)).unwrap(),
                Kernels::Fast,
            ),
        ] {
            let reps = (2_000_000_000 / (rows * cols * n)).max(3);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = cpu_ns(origin);
                for _ in 0..reps {
                    k.matmul(&w, &x, n, Some(&bias), &mut y, &mut scratch);
                }
                best = best.min((cpu_ns(origin) - t) * 1e-9 / reps as f64);
            }
            let gmacs = (rows * cols * n) as f64 / best / 1e9;
            println!(
                "{name:10} {rows:5} x {cols:5} x n {n:4}: {:8.1} us  {gmacs:6.1} GMAC/s",
                best * 1e6
            );
        }
    }
}
