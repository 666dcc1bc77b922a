//! `topkit eval`: the accuracy/RAM sweep for choosing k. Every setting of the cross product
//! (k_attn in the list or dense) x (k_ff in the list or off) embeds every text; its accuracy is
//! the cosine to the dense embedding (min and mean over the texts), its cost the plan's peak RAM
//! (the arena to provide), checked against the arena's measured high-water mark.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use serde_json::json;

use crate::embed::{Session, read_texts, tokenize_all, with_session};
use crate::options::RunOpts;
use crate::size::human;

/// Arguments of `topkit eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Packed model file.
    pub file: PathBuf,
    /// Texts, one per line (blank lines skipped).
    #[arg(long = "file", value_name = "TEXTS")]
    pub text_file: PathBuf,
    /// Keys kept per query to try, comma-separated (dense is always included).
    #[arg(long, value_name = "LIST", value_parser = parse_k, value_delimiter = ',', default_value = "8,16,32,64,128")]
    pub k_attn: Vec<usize>,
    /// Feed-forward hidden units kept per token to try, comma-separated (off is always
    /// included); default: only off.
    #[arg(long, value_name = "LIST", value_parser = parse_k, value_delimiter = ',')]
    pub k_ff: Vec<usize>,
    /// Tokens processed together.
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
    /// Draw mean and min cosine vs keys kept per query into this SVG file, one series per
    /// k_ff.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Instead of the sweep: compare FILE's embeddings (dense) with those of this file (e.g.
    /// the f32 packing of the same model), text by text: min and mean cosine, what a
    /// quantization recipe costs.
    #[arg(long, value_name = "REFERENCE", conflicts_with_all = ["k_attn", "k_ff", "plot"])]
    pub against: Option<PathBuf>,
    /// Kernels for --against (the sweep always runs the reference kernels).
    #[arg(long, value_enum, default_value_t = crate::options::KernelChoice::Reference, requires = "against")]
    pub kernels: crate::options::KernelChoice,
}

/// What `eval --against` measured.
#[derive(Debug, Clone)]
pub struct Against {
    /// Cosine of FILE's embedding to the reference's, per text.
    pub cosines: Vec<f64>,
    /// Bytes of FILE.
    pub file_bytes: u64,
    /// Bytes of the reference.
    pub reference_bytes: u64,
}

impl Against {
    /// Smallest cosine.
    pub fn min(&self) -> f64 {
        self.cosines.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Mean cosine.
    pub fn mean(&self) -> f64 {
        self.cosines.iter().sum::<f64>() / self.cosines.len().max(1) as f64
    }
}

/// The dense embeddings of `texts` with the encoder in `path`.
fn embed_file(
    path: &std::path::Path,
    kernels: topkit::kernels::Kernels,
    texts: &[String],
) -> Result<Vec<Vec<f32>>> {
    with_session(path, kernels, |s| {
        let tokens = tokenize_all(s, texts)?;
        let run = s.run_config(&RunOpts {
            k_attn: None,
            k_ff: None,
            chunk: 16,
        });
        let plan = s.plan(&run)?;
        let mut out = Vec::with_capacity(texts.len());
        s.embed_all(&run, &plan, &tokens, |_, e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    })
}

/// Compares the embeddings of `file` with those of `reference` on `texts`.
///
/// # Errors
/// When a file cannot be read, is not a sentence encoder, or the two embed to different
/// widths.
pub fn against(
    file: &std::path::Path,
    reference: &std::path::Path,
    kernels: topkit::kernels::Kernels,
    texts: &[String],
) -> Result<Against> {
    errln!("embedding {} texts with {}", texts.len(), file.display());
    let a = embed_file(file, kernels, texts)?;
    errln!(
        "embedding {} texts with {}",
        texts.len(),
        reference.display()
    );
    let b = embed_file(reference, kernels, texts)?;
    if a.first().map(Vec::len) != b.first().map(Vec::len) {
        bail!(
            "{} and {} embed to different widths: not the same model",
            file.display(),
            reference.display()
        );
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(Against {
        cosines: a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect(),
        file_bytes: size(file),
        reference_bytes: size(reference),
    })
}

/// One setting of the sweep and what it gave.
#[derive(Debug, Clone)]
pub struct Row {
    /// Keys kept per query; `None`: dense attention.
    pub k_attn: Option<usize>,
    /// Hidden units kept per token; `None`: dense feed-forward.
    pub k_ff: Option<usize>,
    /// Peak RAM of the plan (the arena size), bytes.
    pub peak_bytes: usize,
    /// Arena high-water mark measured over the texts, bytes.
    pub high_water_bytes: usize,
    /// Smallest cosine to the dense embedding over the texts.
    pub min_cosine: f64,
    /// Mean cosine to the dense embedding over the texts.
    pub mean_cosine: f64,
    /// Wall time of the setting, seconds.
    pub seconds: f64,
}

/// Parses one k of a comma-separated list (`8,16,32`); it must be at least 1.
///
/// # Errors
/// A message when `s` is not a number or is 0.
pub fn parse_k(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("k must be at least 1".to_string()),
        Ok(k) => Ok(k),
        Err(_) => Err(format!("{s:?} is not a number (expected e.g. 8,16,32)")),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn k_name(k: Option<usize>, none: &str) -> String {
    k.map_or_else(|| none.to_string(), |k| k.to_string())
}

/// Runs the sweep on an open session; returns the rows, dense (and off) first.
///
/// # Errors
/// When a text cannot be tokenized, a setting cannot be planned (checked before any is
/// run) or the encoder fails.
pub fn sweep(s: &Session<'_, '_>, args: &EvalArgs, texts: &[String]) -> Result<Vec<Row>> {
    let tokens = tokenize_all(s, texts)?;
    let lens: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    errln!(
        "{} texts, tokens per text: min {}, mean {:.1}, max {} (max_seq {})",
        lens.len(),
        lens.iter().min().unwrap_or(&0),
        lens.iter().sum::<usize>() as f64 / lens.len() as f64,
        lens.iter().max().unwrap_or(&0),
        s.max_seq
    );
    let mut settings = Vec::new();
    for k_ff in std::iter::once(None).chain(args.k_ff.iter().copied().map(Some)) {
        for k_attn in std::iter::once(None).chain(args.k_attn.iter().copied().map(Some)) {
            settings.push((k_attn, k_ff));
        }
    }
    // Check every setting before the long part.
    let plans = settings
        .iter()
        .map(|&(ka, kf)| {
            let run = s.run_config(&RunOpts {
                k_attn: ka,
                k_ff: kf,
                chunk: args.chunk,
            });
            Ok((run, s.plan(&run)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut dense: Vec<Vec<f32>> = Vec::new();
    let mut rows = Vec::new();
    for (i, ((k_attn, k_ff), (run, plan))) in settings.iter().zip(&plans).enumerate() {
        let start = Instant::now();
        let mut cos = Vec::with_capacity(tokens.len());
        let high = s.embed_all(run, plan, &tokens, |t, e| {
            if i == 0 {
                dense.push(e);
                cos.push(1.0);
            } else {
                cos.push(cosine(&e, &dense[t]));
            }
            Ok(())
        })?;
        let row = Row {
            k_attn: *k_attn,
            k_ff: *k_ff,
            peak_bytes: plan.peak_bytes,
            high_water_bytes: high,
            min_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
            mean_cosine: cos.iter().sum::<f64>() / cos.len() as f64,
            seconds: start.elapsed().as_secs_f64(),
        };
        errln!(
            "[{}/{}] k_attn {} k_ff {}: min cosine {:.6}, mean {:.6}, peak {} ({:.1} s)",
            i + 1,
            settings.len(),
            k_name(row.k_attn, "dense"),
            k_name(row.k_ff, "off"),
            row.min_cosine,
            row.mean_cosine,
            human(row.peak_bytes),
            row.seconds
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Runs `topkit eval`.
///
/// # Errors
/// When `--plot` does not end in `.svg`, the texts or the model cannot be read, a setting
/// cannot be planned or run, or the plot cannot be drawn.
pub fn run(args: &EvalArgs) -> Result<()> {
    let texts = read_texts(Some(&args.text_file), &[])?;
    if let Some(p) = &args.plot
        && p.extension().is_none_or(|e| !e.eq_ignore_ascii_case("svg"))
    {
        bail!("--plot writes SVG: give a path ending in .svg");
    }
    // The reference kernels: the sweep in docs/eval-minilm.md is what every target computes.
    let inputs = [args.file.as_path(), args.text_file.as_path()];
    if let Some(p) = &args.plot {
        // Before the sweep, so that the mistake costs no time.
        crate::files::check_not_input(p, &inputs)?;
    }
    if let Some(reference) = &args.against {
        let r = against(&args.file, reference, args.kernels.into(), &texts)?;
        if args.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "texts": texts.len(),
                    "file_bytes": r.file_bytes,
                    "reference_bytes": r.reference_bytes,
                    "min_cosine": r.min(),
                    "mean_cosine": r.mean(),
                    "cosines": r.cosines,
                }))?
            );
        } else {
            outln!("{:<40} {:>12} {:>10}", "file", "bytes", "size");
            for (p, b) in [(&args.file, r.file_bytes), (reference, r.reference_bytes)] {
                outln!(
                    "{:<40} {:>12} {:>10}",
                    p.display(),
                    b,
                    human(usize::try_from(b).unwrap_or(usize::MAX))
                );
            }
            outln!(
                "{} texts: cosine to the reference min {:.6}, mean {:.6} ({:?} kernels)",
                texts.len(),
                r.min(),
                r.mean(),
                args.kernels
            );
        }
        return Ok(());
    }
    let (rows, max_seq) = with_session(&args.file, topkit::kernels::Kernels::Reference, |s| {
        Ok((sweep(s, args, &texts)?, s.max_seq))
    })?;
    if let Some(path) = &args.plot {
        let name = args.file.file_name().map_or_else(
            || args.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let svg = plot(&rows, &format!("{name}: {} texts", texts.len()), max_seq)?;
        crate::files::write_atomic(path, svg.as_bytes(), &inputs)?;
        errln!("plot written to {}", path.display());
    }
    if args.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "k_attn": r.k_attn,
                    "k_ff": r.k_ff,
                    "peak_bytes": r.peak_bytes,
                    "high_water_bytes": r.high_water_bytes,
                    "min_cosine": r.min_cosine,
                    "mean_cosine": r.mean_cosine,
                    "seconds": r.seconds,
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "texts": texts.len(), "rows": rows }))?
        );
    } else {
        print_table(&rows);
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    outln!(
        "{:>6} {:>5} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "k_attn",
        "k_ff",
        "peak bytes",
        "high-water",
        "peak",
        "min cos",
        "mean cos"
    );
    for r in rows {
        outln!(
            "{:>6} {:>5} {:>12} {:>12} {:>10} {:>10.6} {:>10.6}",
            k_name(r.k_attn, "dense"),
            k_name(r.k_ff, "off"),
            r.peak_bytes,
            r.high_water_bytes,
            human(r.peak_bytes),
            r.min_cosine,
            r.mean_cosine
        );
    }
    if rows.iter().all(|r| r.peak_bytes == r.high_water_bytes) {
        outln!("peak bytes (plan) = high-water (measured) for every setting");
    } else {
        outln!("warning: the measured high-water differs from the plan's peak for some setting");
    }
}

/// Series colours, distinct on white (k_ff off first).
const COLORS: [plotters::style::RGBColor; 6] = [
    plotters::style::RGBColor(0x1f, 0x1f, 0x1f),
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0xff, 0x7f, 0x0e),
    plotters::style::RGBColor(0x94, 0x67, 0xbd),
];

/// Digits after the point the cosine axis needs so that labels `span` apart differ: 3 for a
/// span of 0.1 or more, up to 8.
fn cosine_digits(span: f64) -> usize {
    let step = (span / 5.0).max(1e-8);
    // ceil(-log10(step)) digits show a step; at least 3 as before, at most 8 (f32 noise).
    (-step.log10()).ceil().clamp(3.0, 8.0) as usize
}

/// Draws mean (solid) and min (dashed) cosine against the keys kept per query (log scale;
/// dense attention at `dense_keys`, the most a query can see), one colour per k_ff, each
/// point labelled with its k_attn; each line runs through the k_attn values in increasing
/// order, dense last. Returns the SVG text.
///
/// # Errors
/// When the SVG cannot be drawn.
pub fn plot(rows: &[Row], title: &str, dense_keys: usize) -> Result<String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the plot: {e}");
    let keys = |r: &Row| r.k_attn.unwrap_or(dense_keys).min(dense_keys).max(1) as f64;
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut y0 = 1.0f64;
    for r in rows {
        x0 = x0.min(keys(r));
        x1 = x1.max(keys(r));
        y0 = y0.min(r.min_cosine);
    }
    let ypad = ((1.0 - y0) * 0.08).max(1e-6);
    let digits = cosine_digits(1.0 - y0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Accuracy vs keys kept per query ({title})"),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(40 + 8 * digits as u32)
            .build_cartesian_2d(
                (x0 / 1.3..x1 * 1.3).log_scale(),
                y0 - ypad..1.0 + ypad / 2.0,
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "keys kept per query (k_attn, log scale; dense = {dense_keys}, the longest input)"
            ))
            .y_desc("cosine to dense (solid: mean, dashed: min)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.digits$}"))
            .draw()
            .map_err(|e| err(&e))?;
        let mut k_ffs: Vec<Option<usize>> = Vec::new();
        for r in rows {
            if !k_ffs.contains(&r.k_ff) {
                k_ffs.push(r.k_ff);
            }
        }
        for (i, k_ff) in k_ffs.iter().enumerate() {
            let color = COLORS[i % COLORS.len()].to_rgba();
            let mut series: Vec<&Row> = rows.iter().filter(|r| r.k_ff == *k_ff).collect();
            // Along k_attn (dense last): within a k_ff the RAM barely moves, accuracy does.
            series.sort_by_key(|r| r.k_attn.unwrap_or(usize::MAX));
            let mean: Vec<(f64, f64)> = series.iter().map(|r| (keys(r), r.mean_cosine)).collect();
            let min: Vec<(f64, f64)> = series.iter().map(|r| (keys(r), r.min_cosine)).collect();
            chart
                .draw_series(LineSeries::new(mean.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(format!("k_ff {}", k_name(*k_ff, "off")))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(mean.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(DashedLineSeries::new(
                    min.clone(),
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    min.iter()
                        .map(|&p| TriangleMarker::new(p, 4, color.filled())),
                )
                .map_err(|e| err(&e))?;
            chart
                .draw_series(series.iter().zip(&mean).map(|(r, &(x, y))| {
                    // Offset in pixels, right of and above the point.
                    EmptyElement::at((x, y))
                        + Text::new(
                            k_name(r.k_attn, "dense"),
                            (6, -12),
                            ("sans-serif", 11).into_font().color(&color),
                        )
                }))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
