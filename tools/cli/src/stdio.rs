//! Writing to stdout and stderr without losing a failure.
//!
//! Every line the tool prints goes through [`out`] or [`err`] (the `outln!` and `errln!`
//! macros). A failed write does not stop the command (a closed pipe such as `topkit inspect |
//! head` ends the output, not the run), but it is remembered, and [`finish`] reports it when
//! the command ends: a full disk (`topkit embed ... > /dev/full`) turns into exit 2 instead of
//! a silent success. A broken pipe is the reader's choice and stays quiet.

use std::cell::RefCell;
use std::io::{self, Write};

thread_local! {
    /// The first write failure of this run, and on which stream.
    static FAILED: RefCell<Option<(&'static str, io::Error)>> = const { RefCell::new(None) };
}

fn note(stream: &'static str, r: io::Result<()>) {
    if let Err(e) = r
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        FAILED.with(|f| {
            f.borrow_mut().get_or_insert((stream, e));
        });
    }
}

/// Writes to stdout, remembering a failure.
pub fn out(args: std::fmt::Arguments<'_>) {
    note("standard output", io::stdout().write_fmt(args));
}

/// Writes `bytes` to stdout and flushes it (streamed text), remembering a failure.
pub fn out_bytes(bytes: &[u8]) {
    let mut o = io::stdout();
    note(
        "standard output",
        o.write_all(bytes).and_then(|()| o.flush()),
    );
}

/// Writes to stderr, remembering a failure.
pub fn err(args: std::fmt::Arguments<'_>) {
    note("standard error", io::stderr().write_fmt(args));
}

/// Forgets earlier failures (at the start of a run).
pub fn reset() {
    FAILED.with(|f| f.borrow_mut().take());
}

/// Flushes stdout and returns the first write failure of the run, if any (a broken pipe is
/// not one), as a message naming the stream.
pub fn finish() -> Option<String> {
    note("standard output", io::stdout().flush());
    FAILED.with(|f| {
        f.borrow_mut()
            .take()
            .map(|(s, e)| format!("cannot write to {s}: {e}"))
    })
}
