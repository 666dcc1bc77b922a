//! Memory scaling: the plan's peak bytes and the arena's measured high-water mark for seq
//! 128..8192, top-k attention (k = 32) and topkit's dense attention (chunked: C x N scores),
//! next to a vanilla implementation that holds the N x N score matrix of every head.
//!
//! The runs use a seeded random model of all-MiniLM-L6-v2's shape (post-norm BERT, LayerNorm,
//! GELU, d_model 384, 12 heads, d_ff 1536) with 8192 positions and one layer: the peak does
//! not depend on the number of layers, every layer reuses the same arena bytes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, anyhow, ensure};
use topkit::ffn::FfnWeights;
use topkit::kernels::{Matrix, Weights};
use topkit::{
    Activation, Arch, Arena, FfnKind, LayerWeights, Model, ModelConfig, Norm, NormWeights, PosKind,
    RunConfig, plan,
};

use crate::opt;

const CHUNK: usize = 16;
const K_ATTN: usize = 32;

fn config(d_model: usize, n_heads: usize, d_ff: usize, max_seq: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Bert,
        vocab_size: 1000,
        d_model,
        n_layers: 1,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: d_model / n_heads,
        d_ff,
        max_seq,
        type_vocab_size: 2,
        norm: Norm::LayerNorm,
        norm_eps: 1e-12,
        act: Activation::GeluErf,
        ffn: FfnKind::Plain,
        pos: PosKind::Learned,
        rope_theta: 10000.0,
        causal: false,
        tie_embeddings: false,
    }
}

/// SplitMix64 values uniform in `[-a, a)`.
fn random(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// Bytes of a vanilla (unchunked) encoder layer: hidden, Q, K, V and context (`N x d` f32
/// each), the scores of every head (`h x N x N` f32, softmax in place) and the FFN hidden
/// layer (`N x d_ff` f32). A lower bound for eager PyTorch-style code.
fn m(data: &[f32], rows: usize) -> Result<Matrix<'_>, topkit::Error> {
    Matrix::new(rows, data.len() / rows, Weights::F32(data))
}

fn vanilla_bytes(c: &ModelConfig, n: usize) -> usize {
    4 * (5 * n * c.d_model + c.n_heads * n * n + n * c.d_ff)
}

struct Row {
    seq: usize,
    topk_plan: usize,
    topk_high: usize,
    dense_plan: usize,
    dense_high: usize,
    vanilla: usize,
}

pub fn run(args: &[String]) -> Result<()> {
    let max: usize = opt(args, "--max-seq").unwrap_or("8192").parse()?;
    let out = PathBuf::from(opt(args, "--out").unwrap_or("docs"));
    let c = config(384, 12, 1536, max.max(128));
    let (d, f) = (c.d_model, c.d_ff);
    let w = |r: usize, cols: usize, seed: u64| random(r * cols, seed, (1.0 / cols as f32).sqrt());
    let (wq, wk, wv, wo) = (w(d, d, 1), w(d, d, 2), w(d, d, 3), w(d, d, 4));
    let (up, down) = (w(f, d, 5), w(f, d, 6));
    let (ones, zeros) = (vec![1f32; d], vec![0f32; d]);
    let norm = NormWeights {
        gain: &ones,
        bias: Some(&zeros),
    };
    let layers = [LayerWeights {
        q: m(&wq, d)?,
        q_bias: None,
        k: m(&wk, d)?,
        k_bias: None,
        v: m(&wv, d)?,
        v_bias: None,
        o: m(&wo, d)?,
        o_bias: None,
        attn_norm: norm,
        ffn: FfnWeights {
            up: m(&up, f)?,
            up_bias: None,
            gate: None,
            down_t: m(&down, f)?,
            down_layout: topkit::ffn::DownLayout::Transposed,
            down_bias: None,
            act: Activation::GeluErf,
        },
        ffn_norm: norm,
    }];
    let model = Model::new(c, &layers, None).map_err(|e| anyhow!("{e}"))?;
    let mut rows = Vec::new();
    let mut n = 128;
    while n <= max {
        let input = random(n * d, 7 + n as u64, 1.0);
        let measure = |k_attn: Option<usize>| -> Result<(usize, usize)> {
            let run = RunConfig {
                seq_len: n,
                chunk: CHUNK,
                k_attn,
                k_ff: None,
            };
            let p = plan(&c, &run).peak_bytes;
            let mut mem = vec![0u128; p.div_ceil(16)];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut mem);
            let mut arena = Arena::new(&mut bytes[..p])?;
            let t = Instant::now();
            let h = topkit::forward(&model, &run, &input, None, &mut arena)
                .map_err(|e| anyhow!("{e}"))?;
            ensure!(
                h.iter().all(|v| v.is_finite()),
                "non-finite output at seq {n}"
            );
            let high = arena.high_water();
            eprintln!(
                "seq {n} k_attn {k_attn:?}: plan {p} B, high-water {high} B, {:.1} s",
                t.elapsed().as_secs_f64()
            );
            Ok((p, high))
        };
        let (topk_plan, topk_high) = measure(Some(K_ATTN))?;
        let (dense_plan, dense_high) = measure(None)?;
        rows.push(Row {
            seq: n,
            topk_plan,
            topk_high,
            dense_plan,
            dense_high,
            vanilla: vanilla_bytes(&c, n),
        });
        n *= 2;
    }
    let table = table(&rows);
    print!("{table}");
    std::fs::create_dir_all(&out)?;
    plot(&out.join("memory-scaling.svg"), &rows)?;
    eprintln!("wrote {}/memory-scaling.svg", out.display());
    Ok(())
}

fn kib(b: usize) -> String {
    format!("{:.1}", b as f64 / 1024.0)
}

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| seq | top-k 32 plan KiB | top-k 32 measured KiB | dense plan KiB | dense measured KiB | vanilla h x N x N KiB | vanilla / top-k |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.1} |",
            r.seq,
            kib(r.topk_plan),
            kib(r.topk_high),
            kib(r.dense_plan),
            kib(r.dense_high),
            kib(r.vanilla),
            r.vanilla as f64 / r.topk_plan as f64
        );
    }
    s
}

fn plot(path: &std::path::Path, rows: &[Row]) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let x1 = rows.last().map_or(8192, |r| r.seq) as f64;
    let y1 = rows.iter().map(|r| mib(r.vanilla)).fold(1.0, f64::max);
    let y0 = rows
        .iter()
        .map(|r| mib(r.topk_plan))
        .fold(f64::INFINITY, f64::min);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Peak working memory vs sequence length (MiniLM shape, chunk 16)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (100f64..x1 * 1.2).log_scale(),
            (y0 * 0.7..y1 * 1.5).log_scale(),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("sequence length (tokens)")
        .y_desc("peak bytes (MiB, log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| err(&e))?;
    type Get = fn(&Row) -> usize;
    let series: [(&str, Get, RGBColor, bool); 3] = [
        (
            "top-k 32, plan (= measured)",
            |r| r.topk_plan,
            RGBColor(0x1f, 0x77, 0xb4),
            false,
        ),
        (
            "topkit dense (chunked), plan (= measured)",
            |r| r.dense_plan,
            RGBColor(0x2c, 0xa0, 0x2c),
            false,
        ),
        (
            "vanilla with h x N x N scores (formula)",
            |r| r.vanilla,
            RGBColor(0xd6, 0x27, 0x28),
            true,
        ),
    ];
    for (name, get, color, dashed) in series {
        let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.seq as f64, mib(get(r)))).collect();
        let style = color.stroke_width(2);
        if dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
