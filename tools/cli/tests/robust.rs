//! Hostile inputs and outputs around the packed-file parser: devices and directories given as
//! inputs, outputs that are inputs, stdout that cannot be written. Each ends in exit 2 with a
//! one-line error, or in a correct result; no existing file is lost.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The tiny BERT packed into `dir/m.tkm`, with a texts file `dir/texts.svg` (named so that
/// `--plot` would accept it as its output).
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    write_hf_dir(&dir.join("model"), "bert", &tiny_tensors());
    let m = pack(&dir.join("model"), &dir.join("m.tkm"), &[]);
    let texts = dir.join("texts.svg");
    std::fs::write(&texts, "hello world\nthe cat\n").unwrap();
    (m, texts)
}

#[test]
fn an_output_that_is_an_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, texts) = setup(tmp.path());
    let model = tmp.path().join("model");
    let st = model.join("model.safetensors");
    let st_before = std::fs::read(&st).unwrap();
    topkit(&["pack", s(&model), "-o", s(&st)]).assert_error("it is the input");
    // The same file by another path.
    let alias = model.join(".").join("config.json");
    topkit(&["pack", s(&model), "-o", s(&alias)]).assert_error("it is the input");
    assert_eq!(std::fs::read(&st).unwrap(), st_before);

    let m_before = std::fs::read(&m).unwrap();
    topkit(&["budget", s(&m), "--seq", "8", "--emit-rust", s(&m)]).assert_error("it is the input");
    topkit(&["eval", s(&m), "--file", s(&texts), "--plot", s(&texts)])
        .assert_error("it is the input");
    assert_eq!(std::fs::read(&m).unwrap(), m_before);
    assert_eq!(
        std::fs::read_to_string(&texts).unwrap(),
        "hello world\nthe cat\n"
    );
    // A device as the output is never replaced.
    #[cfg(unix)]
    topkit(&["pack", s(&model), "-o", "/dev/null"]).assert_error("not a regular file");
}

#[test]
fn outputs_replace_the_old_file_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, texts) = setup(tmp.path());
    let model = tmp.path().join("model");
    let out = tmp.path().join("again.tkm");
    std::fs::write(&out, vec![7u8; 1 << 20]).unwrap();
    pack(&model, &out, &[]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&m).unwrap());
    let rs = tmp.path().join("plan.rs");
    let o = topkit(&["budget", s(&m), "--seq", "8", "--emit-rust", s(&rs)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(std::fs::read_to_string(&rs).unwrap().contains("pub const"));
    let svg = tmp.path().join("plot.svg");
    let o = topkit(&[
        "eval",
        s(&m),
        "--file",
        s(&texts),
        "--k-attn",
        "2",
        "--plot",
        s(&svg),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{plot}");
    assert!(plot.contains("keys kept per query"));
    // No temporary file left in the folder.
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?}");
    }
}

#[cfg(unix)]
#[test]
fn devices_and_directories_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = setup(tmp.path());
    let start = std::time::Instant::now();
    for args in [
        vec!["inspect", "/dev/zero"],
        vec!["budget", "/dev/zero", "--seq", "8"],
        vec!["embed", "/dev/zero", "text"],
        vec!["generate", "/dev/zero", "--prompt-ids", "1"],
    ] {
        topkit(&args).assert_error("not a regular file");
    }
    topkit(&["inspect", s(tmp.path())]).assert_error("a directory");
    topkit(&["embed", s(&m), "--file", "/dev/urandom"]).assert_error("not a regular file");
    topkit(&["pack", "/dev/zero", "-o", s(&tmp.path().join("z.tkm"))]).assert_error("/dev/zero");
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

/// Runs `topkit ARGS` with stdout going to `stdout`.
fn with_stdout(args: &[&str], stdout: Stdio) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_topkit"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_stdout_is_an_error_a_closed_pipe_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = setup(tmp.path());
    let full = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    };
    for args in [
        vec!["inspect", s(&m), "--json"],
        vec!["inspect", s(&m)],
        vec!["embed", s(&m), "hello world"],
        vec!["budget", s(&m), "--seq", "8", "--json"],
    ] {
        let (code, err) = with_stdout(&args, full());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A reader that stops early: the tool ends quietly with its own verdict.
    let mut child = Command::new(env!("CARGO_BIN_EXE_topkit"))
        .args(["inspect", s(&m)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
