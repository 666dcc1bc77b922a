//! `cargo xtask bench-target`: the `kernels` firmware bins (`targets/common/src/bench.rs`) in
//! QEMU with `-icount shift=0` on the Cortex-M4F and on RV32IMAC. Each checks the fast int8
//! and block-weight kernels (the Arm DSP ones on the M4F) against the generic ones bit for
//! bit, and counts instructions per multiply-accumulate of the matrix-vector kernels and per
//! token of the firmware model (reference and fast kernels). The job fails on any mismatch (the model's
//! arena high-water mark against the plan of each kernel choice included), and when the
//! model's fast answer differs between the two targets (the DSP path against the generic
//! one); the counts are reported, never checked (see docs/bench-targets.md).

use crate::firmware::{Firmware, build_and_run};
use crate::job::{Ctx, Step};
use crate::util::Res;

/// The `kernels` bins, on the targets whose instruction counts are reported.
const BENCHES: &[Firmware] = &[
    Firmware::main("cortex-m", "thumbv7em-none-eabihf").with(&[], "kernels"),
    Firmware::main("riscv", "riscv32imac-unknown-none-elf").with(&[], "kernels"),
];

/// The Cortex-M4F goals, instructions per MAC: the int8 matvec of issue #9 (CMSIS-NN class)
/// and the block-weight matvecs of issue #16 (`Q8_0` <= 2, 4-bit <= 2.5). Reported, never
/// checked (the counts are QEMU's).
const GOALS: &[(&str, f64)] = &[
    ("int8 x int8 matvec, fast", 2.0),
    ("Q8_0 weights x int8 matvec, fast", 2.0),
    ("Q4_0 weights x int8 matvec, fast", 2.5),
    ("Q4_1 weights x int8 matvec, fast", 2.5),
];

/// What one `kernels` run reported.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// `check:` lines: what, cases, mismatches.
    checks: Vec<(String, u64, u64)>,
    /// `bench:` lines: kernel, instructions, MACs.
    benches: Vec<(String, u64, u64)>,
    /// `token:` lines.
    tokens: Vec<Token>,
    /// What `Kernels::Fast` runs there.
    fast: String,
}

/// One `token:` line: a model run with one kernel choice.
#[derive(Debug, Default, PartialEq)]
struct Token {
    kernels: String,
    instructions: u64,
    tokens: u64,
    /// Peak stack of the inference, bytes.
    stack: u64,
    /// Arena high-water mark, bytes.
    arena: u64,
    /// The plan's peak for these kernels, bytes.
    planned: u64,
    digest: String,
}

/// The numbers of `line` after `prefix`, in order.
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn parse(log: &str) -> Res<Report> {
    let mut r = Report::default();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("check: ") {
            let (what, tail) = rest.split_once(' ').ok_or("bad check line")?;
            let n = numbers(tail);
            r.checks
                .push((what.to_string(), n[0], *n.get(1).ok_or("bad check line")?));
        } else if let Some(rest) = line.strip_prefix("bench: ") {
            // `<kernel> <rows>x<cols> <instructions> instructions <macs> MACs`
            let (head, tail) = rest.rsplit_once(" instructions ").ok_or("bad bench line")?;
            let (head, instr) = head.rsplit_once(' ').ok_or("bad bench line")?;
            let (name, _shape) = head.rsplit_once(' ').ok_or("bad bench line")?;
            let macs = *numbers(tail).first().ok_or("bad bench line")?;
            r.benches.push((
                name.to_string(),
                instr.parse().map_err(|_| "bad bench count")?,
                macs,
            ));
        } else if let Some(rest) = line.strip_prefix("token: kernels ") {
            let mut w = rest.split_whitespace();
            let name = w.next().ok_or("bad token line")?.to_string();
            // `<instructions> instructions <tokens> tokens stack <bytes> bytes arena <bytes>
            // bytes planned <bytes> bytes digest <hex>`
            let (counts, digest) = rest.split_once(" digest ").ok_or("bad token line")?;
            let n = numbers(counts);
            if n.len() != 5 {
                return Err("bad token line".into());
            }
            r.tokens.push(Token {
                kernels: name,
                instructions: n[0],
                tokens: n[1],
                stack: n[2],
                arena: n[3],
                planned: n[4],
                digest: digest.trim().to_string(),
            });
        } else if let Some(rest) = line.strip_prefix("fast: ") {
            r.fast = rest.to_string();
        }
    }
    if r.checks.is_empty() || r.benches.is_empty() || r.tokens.len() != 2 {
        return Err("the kernels log lacks check, bench or token lines".into());
    }
    Ok(r)
}

fn per_mac(r: &Report, kernel: &str) -> Option<f64> {
    r.benches
        .iter()
        .find(|b| b.0 == kernel)
        .map(|b| b.1 as f64 / b.2 as f64)
}

/// Runs both bins, prints the table, fails on a mismatch.
fn bench_targets(ctx: &Ctx) -> Res {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for fw in BENCHES {
        let r = parse(&build_and_run(ctx, fw)?)?;
        for (what, cases, m) in &r.checks {
            if *m != 0 {
                failures.push(format!(
                    "{}: {what}: {m} of {cases} cases differ from the generic kernel",
                    fw.target
                ));
            }
        }
        for t in r.tokens.iter().filter(|t| t.arena != t.planned) {
            failures.push(format!(
                "{}: {} kernels: arena high-water {} bytes, plan {} bytes",
                fw.target, t.kernels, t.arena, t.planned
            ));
        }
        reports.push((fw.target, r));
    }
    println!("\ninstructions per multiply-accumulate, 384 x 384 matrix times one vector");
    print!("\n| kernel |");
    for (t, r) in &reports {
        print!(" {t} (fast: {}) |", r.fast);
    }
    println!("\n|---|{}", "---:|".repeat(reports.len()));
    for (name, _, _) in &reports[0].1.benches {
        print!("| {name} |");
        for (_, r) in &reports {
            match per_mac(r, name) {
                Some(v) => print!(" {v:.2} |"),
                None => print!(" - |"),
            }
        }
        println!();
    }
    println!(
        "\ninstructions per token, stack and arena of the inference (bytes), firmware model \
         (Kernels::Reference vs Kernels::Fast; the arena equals each plan, checked)\n"
    );
    println!(
        "| target | reference | fast | reference / fast | stack, reference | stack, fast | arena, reference | arena, fast |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (t, r) in &reports {
        let per = |i: usize| r.tokens[i].instructions / r.tokens[i].tokens.max(1);
        println!(
            "| {t} | {} | {} | {:.2} | {} | {} | {} | {} |",
            per(0),
            per(1),
            per(0) as f64 / per(1).max(1) as f64,
            r.tokens[0].stack,
            r.tokens[1].stack,
            r.tokens[0].arena,
            r.tokens[1].arena
        );
    }
    let digests: Vec<&str> = reports
        .iter()
        .map(|(_, r)| r.tokens[1].digest.as_str())
        .collect();
    if digests.windows(2).any(|w| w[0] != w[1]) {
        failures.push(format!(
            "the fast kernels give different answers on the targets: {digests:?}"
        ));
    } else {
        println!(
            "\nfast answer identical on every target (digest {})",
            digests[0]
        );
    }
    for &(kernel, goal) in GOALS {
        if let Some(v) = per_mac(&reports[0].1, kernel) {
            let verdict = if v <= goal { "met" } else { "MISSED" };
            println!(
                "goal: {} `{kernel}` {v:.2} instructions per MAC, goal <= {goal}: {verdict}",
                reports[0].0
            );
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// The steps of `cargo xtask bench-target`.
pub fn bench_target(ctx: &Ctx) -> Vec<Step> {
    let ctx = Ctx {
        sysroot: ctx.sysroot.clone(),
    };
    vec![Step::Check(
        "kernels firmware: fast int8 kernels equal the generic ones; instruction counts".into(),
        Box::new(move || bench_targets(&ctx)),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernels_log() {
        let log = "check: dot_i8_i8 1920 cases, 0 mismatches\n\
            bench: int8 x int8 matvec, fast 384x384 207880 instructions 147456 MACs\n\
            fast: arm_dsp (SMLAD)\n\
            token: kernels reference 26202440 instructions 32 tokens stack 3600 bytes arena 60000 bytes planned 60000 bytes digest 0x898047ef\n\
            token: kernels fast 19668640 instructions 32 tokens stack 2100 bytes arena 70016 bytes planned 70016 bytes digest 0x241f3047\n";
        let r = parse(log).unwrap();
        assert_eq!(r.checks, vec![("dot_i8_i8".to_string(), 1920, 0)]);
        assert_eq!(
            r.benches,
            vec![("int8 x int8 matvec, fast".to_string(), 207880, 147456)]
        );
        assert_eq!(r.tokens[1].digest, "0x241f3047");
        assert_eq!(r.tokens[1].stack, 2100);
        assert_eq!((r.tokens[1].arena, r.tokens[1].planned), (70016, 70016));
        assert_eq!(r.tokens[0].instructions, 26202440);
        assert_eq!(r.tokens[0].tokens, 32);
        assert_eq!(r.fast, "arm_dsp (SMLAD)");
        assert!(parse("noise\n").is_err());
    }
}
