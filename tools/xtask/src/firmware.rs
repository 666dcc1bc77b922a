//! `cargo xtask test-cross`: build each firmware under `targets/`, run it in QEMU, decode its
//! defmt log (`crate::qemu`), and compare its answer with the host run of the same generated model (`targets/common`, example
//! `host`): same model, same input, same math backend (micromath), so the generic kernels
//! must give the same bits. Also checks the measured arena against the plan, the RAM total
//! against the board, reports `text/data/bss` against the golden files in
//! `targets/*/expected/`, and shows that a too-small arena budget fails the build.

use crate::job::{Ctx, Step, cross_cargo};
use crate::util::{Cmd, Res, workspace_root};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The model a firmware embeds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FwModel {
    /// The seeded random BERT that `targets/common/build.rs` generates (fits a Cortex-M4).
    Generated,
    /// all-MiniLM-L6-v2 packed int8 (23 MB: RISC-V `virt` only), 16 tokens, top-8 attention.
    MiniLm,
}

/// One firmware build to run in QEMU.
pub struct Firmware {
    /// Folder under `targets/`.
    pub dir: &'static str,
    /// Rust target.
    pub target: &'static str,
    /// Cargo features of the firmware crate (e.g. `f32` matrices).
    pub features: &'static [&'static str],
    /// The embedded model.
    pub model: FwModel,
    /// The binary to run (`heap` for the embedded-alloc variant; empty: `topkit-<dir>`).
    pub bin: &'static str,
}

impl Firmware {
    fn bin_name(&self) -> String {
        if self.bin.is_empty() {
            format!("topkit-{}", self.dir)
        } else {
            self.bin.to_string()
        }
    }

    /// Name used in logs and golden file names: `<target>[-<features>]`.
    pub fn name(&self) -> String {
        let mut n = self.target.to_string();
        for f in self.features {
            n.push('-');
            n.push_str(f);
        }
        if self.model == FwModel::MiniLm {
            n.push_str("-minilm");
        }
        n
    }

    /// The build-time environment of `targets/common/build.rs` for this model.
    fn model_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        match self.model {
            FwModel::Generated => Vec::new(),
            FwModel::MiniLm => vec![
                ("TOPKIT_FW_MODEL", minilm_tkm().into_os_string()),
                ("TOPKIT_FW_SEQ", "16".into()),
            ],
        }
    }
}

/// The int8 MiniLM that the `models` job packs (outside the repository).
fn minilm_tkm() -> PathBuf {
    crate::model::packed_path("int8")
}

impl Firmware {
    /// The main binary (`topkit-<dir>`) of `dir` for `target`, with the generated model.
    pub const fn main(dir: &'static str, target: &'static str) -> Self {
        Firmware {
            dir,
            target,
            features: &[],
            model: FwModel::Generated,
            bin: "",
        }
    }

    /// The same firmware with cargo `features` and binary `bin` (empty: the main one).
    pub const fn with(self, features: &'static [&'static str], bin: &'static str) -> Self {
        Firmware {
            features,
            bin,
            ..self
        }
    }
}

/// What `test-cross` runs: the Cortex-M4F firmware with int8 and f32 matrices, the same code
/// for Cortex-M0+ (no FPU: soft float, still the same bits), the RISC-V one, and the
/// embedded-alloc variant (config read at run time, arena from a heap).
pub const FIRMWARES: &[Firmware] = &[
    Firmware::main("cortex-m", "thumbv7em-none-eabihf"),
    Firmware::main("cortex-m", "thumbv7em-none-eabihf").with(&["f32"], ""),
    Firmware::main("cortex-m", "thumbv6m-none-eabi"),
    Firmware::main("riscv", "riscv32imac-unknown-none-elf"),
    Firmware::main("cortex-m", "thumbv7em-none-eabihf").with(&["heap"], "heap"),
];

/// The MiniLM job: the real model on RISC-V (too large for the Cortex-M board's 4 MiB).
pub const MINILM: &[Firmware] = &[Firmware {
    model: FwModel::MiniLm,
    bin: "topkit-riscv",
    ..Firmware::main("riscv", "riscv32imac-unknown-none-elf")
}];

/// Lines of the report that must be identical on the host and every target (`embedding:`
/// only when the model has a tokenizer and the input is the golden text).
const ANSWER: [&str; 5] = ["model:", "input:", "output:", "first:", "embedding:"];
/// Cosine to the sentence-transformers embedding the int8 MiniLM must reach (the bar of
/// `tests/tests/minilm.rs` for int8).
const INT8_COSINE_BAR: f64 = 0.99;
/// The message of the budget assert in the constants `topkit budget --emit-rust` writes.
const BUDGET_MESSAGE: &str = "the topkit arena does not fit the RAM budget";

fn targets_dir() -> PathBuf {
    workspace_root().join("targets")
}

/// Firmware builds share one target folder (the host build scripts and the packer they run
/// are built once): `$CARGO_TARGET_DIR/firmware`, else `target/firmware`.
fn target_dir() -> PathBuf {
    crate::util::cargo_target_dir().join("firmware")
}

fn fw_cargo(ctx: &Ctx, sub: &str, fw: &Firmware) -> Cmd {
    let mut c = cross_cargo(ctx, sub, fw.target)
        .cwd(targets_dir().join(fw.dir))
        .env("CARGO_TARGET_DIR", target_dir())
        .arg("--release");
    c = c.args(["--config", &remap_paths(ctx, fw.target)]);
    if !fw.features.is_empty() {
        c = c.args(["--features", &fw.features.join(",")]);
    }
    for (k, v) in fw.model_env() {
        c = c.env(k, v);
    }
    if sub != "clippy" {
        c = c.args(["--bin", &fw.bin_name()]);
    }
    c
}

/// `target.<target>.rustflags`, which cargo joins to the firmware's own `.cargo/config.toml`
/// flags: `--remap-path-prefix` for every folder whose path ends up in the binary (panic
/// locations of this checkout, of the registry's crates, of `core` built from source, of
/// generated code in the target folder), so the ELF and its golden sizes do not depend on
/// where the checkout, the cargo home or the toolchain live.
fn remap_paths(ctx: &Ctx, target: &str) -> String {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    // Later prefixes win: the target folder may lie inside the checkout.
    let pairs = [
        (Some(ctx.sysroot.clone()), "/rust-sysroot"),
        (Some(crate::util::cache_dir()), "/topkit-cache"),
        (cargo_home, "/cargo-home"),
        (Some(workspace_root()), "/topkit"),
        (Some(target_dir()), "/target"),
    ];
    let flags: Vec<String> = pairs
        .iter()
        .filter_map(|(from, to)| {
            Some(format!(
                "\"--remap-path-prefix={}={to}\"",
                from.as_ref()?.display()
            ))
        })
        .collect();
    format!("target.{target}.rustflags=[{}]", flags.join(", "))
}

/// The host's answer for the model and features of `fw` (cached: several firmwares share it).
fn host_answer(fw: &Firmware) -> Res<String> {
    static CACHE: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    // The host answer depends on the model only (the heap variant must match the static one).
    let key = fw.name().replace(fw.target, "").replace("-heap", "");
    if let Some(out) = CACHE
        .lock()
        .map_err(|_| "host answer cache poisoned")?
        .as_ref()
        .and_then(|m| m.get(&key))
    {
        return Ok(out.clone());
    }
    let mut c = Cmd::cargo()
        .cwd(targets_dir().join("common"))
        .env("CARGO_TARGET_DIR", target_dir())
        .args(["run", "--quiet", "--example", "host"]);
    if fw.features.contains(&"f32") {
        c = c.args(["--features", "f32"]);
    }
    for (k, v) in fw.model_env() {
        c = c.env(k, v);
    }
    println!("$ {c}");
    let out = c.output()?;
    println!("{out}");
    CACHE
        .lock()
        .map_err(|_| "host answer cache poisoned")?
        .get_or_insert_with(HashMap::new)
        .insert(key, out.clone());
    Ok(out)
}

fn answer_lines(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| ANSWER.iter().any(|p| l.starts_with(p)))
        .collect()
}

fn report_line<'a>(report: &'a str, prefix: &str) -> Res<&'a str> {
    report
        .lines()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| format!("no `{prefix}` line in the firmware output"))
}

/// The digits of the word after `key` (`k_attn Some(8)` gives 8).
fn field(line: &str, key: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    let digits: String = words.next()?.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The numbers after `prefix` on the line that starts with it.
fn numbers(report: &str, prefix: &str) -> Res<Vec<u64>> {
    let line = report_line(report, prefix)?;
    Ok(line[prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect())
}

/// The firmware's ELF file after `fw_cargo(.., "build", fw)`.
fn elf_path(fw: &Firmware) -> PathBuf {
    target_dir()
        .join(fw.target)
        .join("release")
        .join(fw.bin_name())
}

/// Builds `fw` and runs it in QEMU: its decoded log, or an error (with the log) when the
/// firmware fails.
pub fn build_and_run(ctx: &Ctx, fw: &Firmware) -> Res<String> {
    fw_cargo(ctx, "build", fw).run()?;
    let elf = elf_path(fw);
    println!("$ cargo xtask qemu-run {}", elf.display());
    let run = crate::qemu::run(&elf, true)?;
    if run.success {
        Ok(run.text)
    } else {
        Err(format!(
            "{}: the firmware failed ({}):\n{}",
            fw.name(),
            run.status,
            run.text
        ))
    }
}

/// Builds, runs in QEMU (decoding its defmt log), compares; prints the table row.
fn run_firmware(ctx: &Ctx, fw: &Firmware) -> Res {
    let host = host_answer(fw)?;
    let out = build_and_run(ctx, fw)?;
    let elf = elf_path(fw);

    let (want, got) = (answer_lines(&host), answer_lines(&out));
    if want.len() < ANSWER.len() - 1 || want != got {
        return Err(format!(
            "{}: the answer differs from the host's:\nhost:\n  {}\nfirmware:\n  {}",
            fw.name(),
            want.join("\n  "),
            got.join("\n  ")
        ));
    }
    let arena = numbers(&out, "arena:")?;
    if arena.len() != 2 || arena[0] != arena[1] {
        return Err(format!(
            "{}: measured arena {:?} differs from the plan",
            fw.name(),
            arena
        ));
    }
    let ram = numbers(&out, "ram:")?;
    if ram.len() < 4 || ram[2] >= ram[3] {
        return Err(format!(
            "{}: statics + stack do not fit the RAM: {ram:?}",
            fw.name()
        ));
    }
    if fw.bin == "heap" {
        let heap = numbers(&out, "heap:")?;
        if heap.len() != 3 || heap[0] != heap[1] || heap[2] != 0 {
            return Err(format!(
                "{}: the heap changed or was used during inference: {heap:?}",
                fw.name()
            ));
        }
    }
    if fw.model == FwModel::MiniLm {
        let cos = cosine_to_golden(&out)?;
        println!("cosine to sentence-transformers: {cos:.6} (bar {INT8_COSINE_BAR})");
        if cos < INT8_COSINE_BAR {
            return Err(format!("{}: cosine {cos} to the reference", fw.name()));
        }
    }
    let sizes = elf_sizes(&elf)?;
    check_golden_sizes(ctx, fw, &sizes)?;
    let model = report_line(&out, "model:")?;
    let instr = numbers(&out, "instructions:")?;
    let f = |key| field(model, key).map_or("?".to_string(), |v| v.to_string());
    let mut words = model.split_whitespace().skip(1);
    let (name, dtype) = (words.next().unwrap_or("?"), words.next().unwrap_or("?"));
    println!(
        "table: | {} | {name} d{} L{} | {dtype} | {} | {} | {} | {} | {} | {} | {} |",
        fw.name(),
        f("d_model"),
        f("layers"),
        f("seq"),
        f("k_attn"),
        sizes.text + sizes.data,
        arena[1],
        arena[0],
        ram[1],
        instr.get(1).copied().unwrap_or(0),
    );
    Ok(())
}

/// Cosine between the firmware's `embedding:` line (f32 bit patterns) and the reference
/// embedding of the first text of `tests/data/minilm_golden.json` (the text the firmware tokenizes).
fn cosine_to_golden(report: &str) -> Res<f64> {
    let floats = |s: &str| -> Vec<f64> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    // The firmware logs f32 bit patterns (`embedding: [0x3d68c62a, ...]`): exact values.
    let got: Vec<f64> = report_line(report, "embedding:")?["embedding:".len()..]
        .split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace())
        .filter_map(|w| u32::from_str_radix(w.strip_prefix("0x")?, 16).ok())
        .map(|b| f64::from(f32::from_bits(b)))
        .collect();
    let path = workspace_root().join("tests/data/minilm_golden.json");
    let json = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = "\"embedding\": [";
    let start = json.find(key).ok_or("no embedding in the golden file")? + key.len();
    let len = json[start..].find(']').ok_or("unterminated embedding")?;
    let want = floats(&json[start..start + len]);
    if got.len() != want.len() || got.is_empty() {
        return Err(format!(
            "embedding of {} values, reference of {}",
            got.len(),
            want.len()
        ));
    }
    let dot: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    Ok(dot / (norm(&got) * norm(&want)))
}

/// `text`, `data` and `bss` bytes of an ELF file, as Berkeley `size` counts them (the
/// riscv-rt `.heap` and `.stack` placeholders, which span the free RAM, are left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Code and read-only data (flash).
    pub text: u64,
    /// Initialised data (flash and RAM).
    pub data: u64,
    /// Zeroed data (RAM).
    pub bss: u64,
}

/// Reads the section table of a 32-bit little-endian ELF file.
pub fn elf_sizes(path: &Path) -> Res<Sizes> {
    let b = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_elf_sizes(&b).ok_or_else(|| format!("{} is not a 32-bit LE ELF file", path.display()))
}

fn parse_elf_sizes(b: &[u8]) -> Option<Sizes> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    if b.get(..6)? != b"\x7fELF\x01\x01" {
        return None;
    }
    let shoff = u32_at(0x20)? as usize;
    let shentsize = u16_at(0x2e)? as usize;
    let shnum = u16_at(0x30)? as usize;
    let shstrndx = u16_at(0x32)? as usize;
    let sh = |i: usize, field: usize| u32_at(shoff + i * shentsize + field);
    let strtab = sh(shstrndx, 16)? as usize;
    let name = |i: usize| -> Option<&[u8]> {
        let start = strtab + sh(i, 0)? as usize;
        let len = b.get(start..)?.iter().position(|&c| c == 0)?;
        b.get(start..start + len)
    };
    let (mut s, alloc, write, nobits) = (
        Sizes {
            text: 0,
            data: 0,
            bss: 0,
        },
        2,
        1,
        8,
    );
    for i in 0..shnum {
        let (kind, flags, size) = (sh(i, 4)?, sh(i, 8)?, u64::from(sh(i, 20)?));
        if flags & alloc == 0 || matches!(name(i)?, b".heap" | b".stack") {
            continue;
        }
        if kind == nobits {
            s.bss += size;
        } else if flags & write != 0 {
            s.data += size;
        } else {
            s.text += size;
        }
    }
    Some(s)
}

/// Compares with `targets/<dir>/expected/<name>.size` (`<name>.build-std.size` when core is
/// built from source, which gives other sizes): a change is reported, not failed (every core
/// change moves it); `TOPKIT_BLESS=1` writes the new sizes.
fn check_golden_sizes(ctx: &Ctx, fw: &Firmware, s: &Sizes) -> Res {
    let route = match crate::setup::route(&ctx.sysroot, fw.target) {
        crate::setup::Route::Rustup => "",
        crate::setup::Route::BuildStd => ".build-std",
    };
    let path = targets_dir()
        .join(fw.dir)
        .join("expected")
        .join(format!("{}{route}.size", fw.name()));
    let text = format!("text {}\ndata {}\nbss {}\n", s.text, s.data, s.bss);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old == text {
        println!(
            "sizes: {} unchanged ({})",
            fw.name(),
            text.replace('\n', " ")
        );
        return Ok(());
    }
    let bless = std::env::var("TOPKIT_BLESS").is_ok_and(|v| v == "1");
    if let (false, Some(d)) = (bless, padding_only(&old, s)) {
        // Cargo hashes the absolute path of the crates outside the firmware's workspace (the
        // core) and the rustflags (the remap prefixes) into the symbol names, which order the
        // functions: another checkout path moves the alignment padding between them.
        println!(
            "sizes: {} unchanged up to function alignment padding (text {d:+} bytes, from the \
             checkout path; {})",
            fw.name(),
            text.replace('\n', " ")
        );
        return Ok(());
    }
    if bless {
        std::fs::write(&path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("sizes: {} written to {}", fw.name(), path.display());
    } else {
        println!(
            "sizes: {} CHANGED (run with TOPKIT_BLESS=1 to accept)\n  was: {}\n  now: {}",
            fw.name(),
            old.replace('\n', " "),
            text.replace('\n', " ")
        );
    }
    Ok(())
}

/// Bytes of alignment padding between functions that the checkout path can move (seen: 8
/// and 16 on Cortex-M4F).
const PADDING_BYTES: i64 = 64;

/// `Some(text difference)` when the golden `old` sizes differ from `s` by at most
/// [`PADDING_BYTES`] of `text`, with `data` and `bss` equal.
fn padding_only(old: &str, s: &Sizes) -> Option<i64> {
    let field = |k: &str| -> Option<u64> {
        old.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
    };
    let d = i64::try_from(s.text).ok()? - i64::try_from(field("text ")?).ok()?;
    (field("data ")? == s.data && field("bss ")? == s.bss && d.abs() <= PADDING_BYTES).then_some(d)
}

/// Builds the Cortex-M firmware with a 16 KiB arena budget (the plan needs more): the build
/// must fail, with the budget assert's message.
fn budget_too_small(ctx: &Ctx) -> Res {
    let fw = &FIRMWARES[0];
    let c = fw_cargo(ctx, "build", fw).env("TOPKIT_FW_RAM_BUDGET", "16K");
    println!("$ {c}    (must fail)");
    match c.output() {
        Ok(_) => Err("the firmware built with a 16 KiB arena budget".into()),
        Err(e) if e.contains(BUDGET_MESSAGE) => {
            println!("failed as it must: {BUDGET_MESSAGE}");
            Ok(())
        }
        Err(e) => Err(format!(
            "the too-small build failed without the budget message:\n{e}"
        )),
    }
}

/// Runs the Cortex-M firmware built to panic: it must log the panic message through defmt
/// and exit with a non-zero status (QEMU passes the semihosting exit status on).
fn panic_reports_and_fails(ctx: &Ctx) -> Res {
    let fw = &FIRMWARES[0];
    fw_cargo(ctx, "build", fw)
        .args(["--features", "panic-check"])
        .run()?;
    let elf = elf_path(fw);
    println!("$ cargo xtask qemu-run {}    (must fail)", elf.display());
    let run = crate::qemu::run(&elf, true)?;
    // Rebuild without the feature, so the ELF left behind is the normal firmware.
    fw_cargo(ctx, "build", fw).run()?;
    if run.success {
        return Err(format!(
            "the panicking firmware exited with status 0:\n{}",
            run.text
        ));
    }
    if run.text.contains("ERROR panicked at ")
        && run.text.contains("panic-check: a deliberate panic")
    {
        println!("failed as it must ({}), with the panic message", run.status);
        Ok(())
    } else {
        Err(format!("the panic message is missing:\n{}", run.text))
    }
}

/// `cargo fmt --check` and `clippy -D warnings` of the firmware crates, which the root
/// workspace's `fmt` and `clippy` jobs do not see (each is its own workspace).
fn lint(ctx: &Ctx) -> Vec<Step> {
    let mut steps = Vec::new();
    for dir in ["common", "cortex-m", "riscv"] {
        steps.push(Step::Cmd(
            Cmd::cargo()
                .cwd(targets_dir().join(dir))
                .args(["fmt", "--check"]),
        ));
    }
    steps.push(Step::Cmd(
        Cmd::cargo()
            .cwd(targets_dir().join("common"))
            .env("CARGO_TARGET_DIR", target_dir())
            .args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    ));
    // Its defmt logger and panic handler exist on bare-metal targets only (clippy of the
    // firmware crates does not lint this path dependency).
    steps.push(Step::Cmd(
        cross_cargo(ctx, "clippy", FIRMWARES[0].target)
            .cwd(targets_dir().join("common"))
            .env("CARGO_TARGET_DIR", target_dir())
            .args([
                "--release",
                "--features",
                "semihosting",
                "--",
                "-D",
                "warnings",
            ]),
    ));
    for fw in FIRMWARES.iter().filter(|f| !f.features.contains(&"f32")) {
        steps.push(Step::Cmd(
            fw_cargo(ctx, "clippy", fw).args(["--", "-D", "warnings"]),
        ));
    }
    // The board variant (defmt over RTT instead of semihosting) must build and link too.
    for fw in [&FIRMWARES[0], &FIRMWARES[3]] {
        steps.push(Step::Cmd(fw_cargo(ctx, "build", fw).args([
            "--no-default-features",
            "--features",
            "rtt",
        ])));
    }
    steps
}

fn firmware_checks(ctx: &Ctx, list: &'static [Firmware]) -> Vec<Step> {
    list.iter()
        .map(|fw| -> Step {
            let ctx = Ctx {
                sysroot: ctx.sysroot.clone(),
            };
            Step::Check(
                format!("{} in QEMU matches the host", fw.name()),
                Box::new(move || run_firmware(&ctx, fw)),
            )
        })
        .collect()
}

/// The steps of `cargo xtask cross-minilm`: fetch all-MiniLM-L6-v2 (cached) and pack it
/// (as the `models` job does), run it on RISC-V, compare with the host and with
/// sentence-transformers.
pub fn test_cross_minilm(ctx: &Ctx) -> Vec<Step> {
    let mut steps = vec![Step::Check(
        "all-MiniLM-L6-v2 fetched and packed".into(),
        Box::new(|| crate::model::fetch_and_pack().map(|_| ())),
    )];
    steps.extend(firmware_checks(ctx, MINILM));
    steps
}

/// The steps of `cargo xtask test-cross`.
pub fn test_cross(ctx: &Ctx) -> Vec<Step> {
    let mut steps = lint(ctx);
    steps.extend(firmware_checks(ctx, FIRMWARES));
    let ctx = || Ctx {
        sysroot: ctx.sysroot.clone(),
    };
    let c = ctx();
    steps.push(Step::Check(
        "a too-small arena budget fails the build".into(),
        Box::new(move || budget_too_small(&c)),
    ));
    let c = ctx();
    steps.push(Step::Check(
        "a panic is reported and fails the run".into(),
        Box::new(move || panic_reports_and_fails(&c)),
    ));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_answer_lines() {
        let r = "model: random int8 d_model 64 layers 2\noutput: 8 values, digest 0x1\nfirst: 1.5 -2\narena: measured 16 bytes, planned 32 bytes, DIFFERENT\nnoise\n";
        assert_eq!(answer_lines(r).len(), 3);
        assert_eq!(numbers(r, "arena:").unwrap(), vec![16, 32]);
        assert_eq!(numbers(r, "model:").unwrap(), vec![8, 64, 2]);
        assert!(numbers(r, "ram:").is_err());
        let model = report_line(r, "model:").unwrap();
        assert_eq!(field(model, "d_model"), Some(64));
        assert_eq!(field("k_attn Some(8) k_ff None", "k_attn"), Some(8));
        assert_eq!(field("k_attn Some(8) k_ff None", "k_ff"), None);
    }

    #[test]
    fn padding_only_tolerates_small_text_moves() {
        let old = "text 1000\ndata 8\nbss 64\n";
        let s = |text, data, bss| Sizes { text, data, bss };
        assert_eq!(padding_only(old, &s(1008, 8, 64)), Some(8));
        assert_eq!(padding_only(old, &s(992, 8, 64)), Some(-8));
        assert_eq!(padding_only(old, &s(1065, 8, 64)), None, "beyond padding");
        assert_eq!(padding_only(old, &s(1000, 8, 68)), None, "bss changed");
        assert_eq!(padding_only("", &s(1000, 8, 64)), None, "no golden file");
    }

    #[test]
    fn elf_sizes_of_a_non_elf_is_none() {
        assert_eq!(parse_elf_sizes(b"\x7fELF\x02\x01rest"), None);
        assert_eq!(parse_elf_sizes(b""), None);
    }
}
