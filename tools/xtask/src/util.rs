//! Small helpers shared by the commands: printing and running processes, paths.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Result type of every step: the error is a one-line human explanation.
pub type Res<T = ()> = Result<T, String>;

/// A command line with extra environment variables, printed before it runs so a CI log shows
/// exactly what to paste into a shell to reproduce a failure.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub cwd: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
        }
    }

    /// `cargo`, as the one that started xtask when there is one (same toolchain).
    pub fn cargo() -> Self {
        Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Self {
        self.env.push((k.to_string(), v.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        // CI runs without a terminal; nothing we start may wait for input.
        c.stdin(Stdio::null());
        c
    }

    /// Runs with inherited stdout/stderr; Ok when the process exits with status 0.
    pub fn run(&self) -> Res {
        println!("$ {self}");
        let status = self
            .command()
            .status()
            .map_err(|e| format!("cannot start `{self}`: {e}"))?;
        check(status, self)
    }

    /// Runs silently and returns stdout (trimmed); stderr is kept for the error message.
    pub fn output(&self) -> Res<String> {
        let out = self
            .command()
            .output()
            .map_err(|e| format!("cannot start `{self}`: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "`{self}` failed ({}): {}",
                describe(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Like `run`, but kills the process after `limit` (used for network steps that hang on
    /// machines without a route to the server instead of failing).
    pub fn run_with_timeout(&self, limit: Duration) -> Res {
        println!("$ {self}    (time limit {} s)", limit.as_secs());
        let mut child = self
            .command()
            .spawn()
            .map_err(|e| format!("cannot start `{self}`: {e}"))?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return check(status, self),
                Ok(None) if start.elapsed() >= limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("`{self}` timed out after {} s", limit.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => return Err(format!("waiting for `{self}`: {e}")),
            }
        }
    }
}

fn check(status: ExitStatus, cmd: &Cmd) -> Res {
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{cmd}` failed ({})", describe(status)))
    }
}

/// "exit code 1" or "killed by signal 9": a crash must read differently from a failure.
pub fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exit code {c}"),
        None => "no exit code".to_string(),
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.cwd {
            write!(f, "(cd {} && ", d.display())?;
        }
        for (k, v) in &self.env {
            write!(f, "{k}={} ", quote(&v.to_string_lossy()))?;
        }
        let prog = Path::new(&self.program);
        // Show `cargo` rather than the absolute path cargo hands us in $CARGO.
        let shown = match prog.file_name() {
            Some(n) if n == "cargo" => "cargo".into(),
            _ => prog.to_string_lossy(),
        };
        write!(f, "{shown}")?;
        for a in &self.args {
            write!(f, " {}", quote(&a.to_string_lossy()))?;
        }
        if self.cwd.is_some() {
            write!(f, ")")?;
        }
        Ok(())
    }
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Root of the workspace (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// Cargo's target folder: `$CARGO_TARGET_DIR`, else `target/` of the workspace.
pub fn cargo_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Downloads and unpacked tools live here, outside the repository: `$TOPKIT_CACHE`, else
/// `$XDG_CACHE_HOME/topkit`, else `~/.cache/topkit`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOPKIT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("topkit");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("topkit")
}

/// Creates `dir` and its parents.
pub fn mkdirs(dir: &Path) -> Res {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Whether a program can be started (looked up on PATH).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// True when this process runs as root (apt steps need it, or sudo).
pub fn is_root() -> bool {
    Cmd::new("id")
        .arg("-u")
        .output()
        .map(|s| s == "0")
        .unwrap_or(false)
}

#[cfg(all(test, unix))]
mod tests {
    use super::Cmd;
    use std::time::Duration;

    #[test]
    fn a_crashed_step_is_a_failure() {
        let e = Cmd::new("sh").args(["-c", "kill -9 $$"]).run().unwrap_err();
        assert!(e.contains("killed by signal 9"), "{e}");
        assert!(
            Cmd::new("sh")
                .args(["-c", "exit 3"])
                .run()
                .unwrap_err()
                .contains("exit code 3")
        );
        assert!(Cmd::new("true").run().is_ok());
    }

    #[test]
    fn a_hanging_step_is_killed_at_its_limit() {
        let t0 = std::time::Instant::now();
        let e = Cmd::new("sleep")
            .arg("30")
            .run_with_timeout(Duration::from_secs(1))
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}
