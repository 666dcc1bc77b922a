//! `cargo xtask qemu-run <elf>`: runs a firmware ELF in QEMU (board chosen from the ELF's
//! machine) and decodes the defmt frames it writes to semihosting stdout, with the ELF's own
//! defmt table (`defmt-decoder` as a library: nothing to install). The firmwares' cargo
//! runner (`targets/qemu-run`) calls it, and `test-cross` uses [`run`] directly.

use crate::util::Res;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// The QEMU command line for an ELF: Cortex-M (`EM_ARM`) on `mps2-an386`, RISC-V 32
/// (`EM_RISCV`) on `virt` with 128 MiB. `-icount shift=0` makes the virtual clock count
/// instructions, so SysTick and `minstret` give repeatable counts.
fn qemu_command(elf: &Path, bytes: &[u8]) -> Res<Command> {
    let machine = bytes
        .get(18..20)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("{} is not an ELF file", elf.display()))?;
    let (program, board): (&str, &[&str]) = match machine {
        40 => (
            "qemu-system-arm",
            &["-machine", "mps2-an386", "-cpu", "cortex-m4"],
        ),
        243 => (
            "qemu-system-riscv32",
            &["-machine", "virt", "-bios", "none", "-m", "128M"],
        ),
        m => {
            return Err(format!(
                "{}: no QEMU board for ELF machine {m}",
                elf.display()
            ));
        }
    };
    let mut c = Command::new(program);
    c.args(board)
        .args([
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
            "-icount",
            "shift=0",
            "-kernel",
        ])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    Ok(c)
}

/// What a run gave: the decoded lines and whether QEMU exited with status 0.
pub struct Run {
    /// Decoded defmt messages, one per line (`ERROR ` before error-level ones).
    pub text: String,
    /// The firmware's semihosting exit status was 0.
    pub success: bool,
    /// The exit status, for messages.
    pub status: String,
}

/// Runs `elf` in QEMU, decoding its defmt frames as they come; `echo` prints each line.
pub fn run(elf: &Path, echo: bool) -> Res<Run> {
    let bytes = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let table = defmt_decoder::Table::parse(&bytes)
        .map_err(|e| format!("{}: bad defmt table: {e}", elf.display()))?
        .ok_or_else(|| format!("{} has no defmt table (.defmt section)", elf.display()))?;
    let mut cmd = qemu_command(elf, &bytes)?;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let mut decoder = table.new_stream_decoder();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let mut malformed = 0usize;
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| format!("reading QEMU's output: {e}"))?;
        if n == 0 {
            break;
        }
        decoder.received(&buf[..n]);
        loop {
            match decoder.decode() {
                Ok(frame) => {
                    let level = frame
                        .level()
                        .map(|l| format!("{} ", l.as_str().to_uppercase()))
                        .unwrap_or_default();
                    let line = format!("{level}{}", frame.display_message());
                    if echo {
                        println!("{line}");
                    }
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    // rzCOBS resynchronises at the next frame boundary: count and go on.
                    malformed += 1;
                }
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    if malformed > 0 {
        let line = format!("xtask: {malformed} malformed defmt frame(s)");
        if echo {
            println!("{line}");
        }
        text.push_str(&line);
        text.push('\n');
    }
    Ok(Run {
        text,
        success: status.success() && malformed == 0,
        status: status.to_string(),
    })
}

/// `cargo xtask qemu-run <elf>`: runs, prints the decoded log, fails when the firmware does.
pub fn qemu_run(elf: &str) -> Res {
    let r = run(Path::new(elf), true)?;
    if r.success {
        Ok(())
    } else {
        Err(format!("the firmware failed ({})", r.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_from_elf_machine() {
        let elf = |machine: u16| {
            let mut b = vec![0u8; 52];
            b[18..20].copy_from_slice(&machine.to_le_bytes());
            b
        };
        let p = Path::new("fw");
        let prog = |m| qemu_command(p, &elf(m)).map(|c| c.get_program().to_owned());
        assert_eq!(prog(40).unwrap(), "qemu-system-arm");
        assert_eq!(prog(243).unwrap(), "qemu-system-riscv32");
        assert!(prog(62).is_err(), "x86-64 has no board");
        assert!(qemu_command(p, b"\x7fELF").is_err(), "truncated header");
    }
}
