//! Micro-benchmark of the host fast matrix products (not a test): MiniLM prefill shapes
//! (128 tokens) and SmolLM2 decode shapes (one token, the output head included), f32, int8
//! and block weights, one thread, the best of 5 wall-clock timings; `generic` rows run the generic int8-activation product
//! (what block weights ran before the x86 kernels).
//! `cargo run --release -p topkit-tests --features std --example gemm_micro`

use std::time::Instant;
use topkit::kernels::{self, BLOCK, BlockType, Kernels, Matrix, Weights, q8_scratch_bytes};

/// The `rows x cols` f32 matrix `w` as blocks of `ty`.
fn blocks(ty: BlockType, w: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; w.len() / BLOCK * ty.block_bytes()];
    for (b, o) in w
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(ty.block_bytes()))
    {
        ty.quantize(b, o);
    }
    out
}

fn main() {
    let only: Option<String> = std::env::args().nth(1);
    let mut s = 1u32;
    let mut next = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        s
    };
    for &(rows, cols, n) in &[
        (384, 384, 16),
        (384, 384, 128),
        (1536, 384, 128),
        (384, 1536, 128),
        (576, 576, 1),
        (1536, 576, 1),
        (576, 1536, 1),
        (49152, 576, 1),
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
        let kinds = [
            BlockType::Q8_0,
            BlockType::Q4_1,
            BlockType::Q4_0,
            BlockType::Q5_1,
        ];
        let data: Vec<(BlockType, Vec<u8>)> = kinds.iter().map(|&t| (t, blocks(t, &wf))).collect();
        let mut cands = vec![
            (
                "int8".to_string(),
                Matrix::new(rows, cols, Weights::I8 { q: &q, scales: &sc }).unwrap(),
                true,
            ),
            (
                "f32".to_string(),
                Matrix::new(rows, cols, Weights::F32(&wf)).unwrap(),
                true,
            ),
        ];
        for (ty, d) in &data {
            let m = Matrix::new(rows, cols, Weights::Blocks { ty: *ty, data: d }).unwrap();
            cands.push((ty.name().to_string(), m, true));
            if *ty == BlockType::Q8_0 || *ty == BlockType::Q4_1 {
                cands.push((ty.name().to_string(), m, false));
            }
        }
        for (name, w, fast) in &cands {
            if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
                continue;
            }
            let macs = rows * cols * n;
            let budget = if *fast { 1_000_000_000 } else { 100_000_000 };
            let reps = (budget / macs).max(2);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    if *fast {
                        Kernels::Fast.matmul(w, &x, n, Some(&bias), &mut y, &mut scratch);
                    } else {
                        kernels::matmul_i8_i8_token(w, &x, n, Some(&bias), &mut y);
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let gmacs = macs as f64 / best / 1e9;
            let how = if *fast { "fast" } else { "generic" };
            println!(
                "{name:5} {how:7} {rows:5} x {cols:5} x n {n:4}: {:9.1} us  {gmacs:6.1} GMAC/s",
                best * 1e6
            );
        }
    }
}
