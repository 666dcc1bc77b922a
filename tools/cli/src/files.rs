//! Reading inputs and writing outputs safely.
//!
//! Inputs are opened only when they are regular files (so `/dev/zero`, a FIFO or a directory
//! is refused before any byte is read) and read with a bound: a text input at most
//! [`TEXT_LIMIT`] bytes, a model at most its size when opened. Outputs are written to a
//! temporary file in the output's folder and renamed over it only when complete, so a failed
//! write (a full disk) leaves the old file as it was; an output that is one of the command's
//! inputs is refused before anything is written.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Largest text input (texts, vocabularies, JSON configurations, id lists), in bytes.
/// Tokenizer files of large vocabularies take a few tens of MiB; nothing textual that
/// the tool reads comes near this.
pub const TEXT_LIMIT: u64 = 256 << 20;

/// Opens `path` for reading when it is a regular file, and returns it with its size.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let cannot = || format!("cannot read {}", path.display());
    // Checked before opening too: opening a FIFO waits for a writer.
    check_regular(path, &std::fs::metadata(path).with_context(cannot)?)?;
    let file = File::open(path).with_context(cannot)?;
    // And on the opened file, which is what is read.
    let meta = file.metadata().with_context(cannot)?;
    check_regular(path, &meta)?;
    Ok((file, meta.len()))
}

fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, pipe or socket)"
        };
        bail!("cannot read {}: {kind}", path.display());
    }
    Ok(())
}

/// Reads the regular file `path` whole, refusing one longer than `limit` bytes. At most the
/// size seen when it was opened (and `limit`) is read, even if it grows meanwhile.
///
/// # Errors
/// When `path` cannot be opened, is not a regular file, is longer than `limit`, or a read
/// fails.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > limit {
        bail!(
            "{}: {len} bytes, more than the {limit} this input may have",
            path.display()
        );
    }
    let mut out = Vec::new();
    out.try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|_| anyhow::anyhow!("{}: cannot allocate {len} bytes", path.display()))?;
    file.take(len)
        .read_to_end(&mut out)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(out)
}

/// Reads a model file (packed, safetensors or GGUF): a regular file, read up to its size.
///
/// # Errors
/// As [`read_bytes`].
pub fn read_model(path: &Path) -> Result<Vec<u8>> {
    read_bytes(path, u64::MAX)
}

/// Reads a UTF-8 text input of at most [`TEXT_LIMIT`] bytes.
///
/// # Errors
/// As [`read_bytes`], and when the text is not UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bytes(path, TEXT_LIMIT)?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// `true` when `a` and `b` name the same existing file (same canonical path, or on Unix the
/// same device and inode, which also catches hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
            return true;
        }
    }
    let _ = (ma, mb);
    matches!(
        (a.canonicalize(), b.canonicalize()),
        (Ok(x), Ok(y)) if x == y
    )
}

/// Refuses `output` when it is one of `inputs` (the files the command read).
///
/// # Errors
/// When `output` is the same file as one of `inputs`.
pub fn check_not_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(output, i)) {
        bail!(
            "refusing to write {}: it is the input {} (give another output path)",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: to a temporary file in the same folder,
/// synced, then renamed over `path`. An existing `path` keeps its permissions; a new one
/// gets read-write for the owner and read for the others. `inputs` are the files the command
/// read: `path` may not be one of them.
///
/// # Errors
/// When `path` is one of `inputs` or exists as something else than a regular file, or the
/// temporary file cannot be created, written or
/// renamed (the temporary file is then removed and `path` is untouched).
pub fn write_atomic(path: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<()> {
    check_not_input(path, inputs)?;
    // Renaming over a device (`-o /dev/null`) would replace the device node itself.
    if let Ok(m) = std::fs::metadata(path)
        && !m.is_file()
    {
        bail!(
            "cannot write {}: it exists and is not a regular file",
            path.display()
        );
    }
    let cannot = || format!("cannot write {}", path.display());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(cannot)?;
    tmp.write_all(bytes).with_context(cannot)?;
    let perms = match std::fs::metadata(path) {
        Ok(m) => Some(m.permissions()),
        Err(_) => new_file_permissions(),
    };
    if let Some(p) = perms {
        tmp.as_file().set_permissions(p).with_context(cannot)?;
    }
    tmp.as_file().sync_all().with_context(cannot)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(cannot)?;
    Ok(())
}

/// Permissions of a new output: the temporary file is created owner-only, which an output
/// should not stay.
fn new_file_permissions() -> Option<std::fs::Permissions> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Some(std::fs::Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_text(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = write_atomic(dir.path(), b"x", &[]).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        #[cfg(unix)]
        {
            let e = read_model(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn text_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "abcdef").unwrap();
        let e = read_bytes(&p, 5).unwrap_err().to_string();
        assert!(e.contains("6 bytes"), "{e}");
        assert_eq!(read_bytes(&p, 6).unwrap(), b"abcdef");
    }

    #[test]
    fn write_replaces_whole_and_refuses_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        write_atomic(&out, b"one", &[]).unwrap();
        write_atomic(&out, b"two!", &[]).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"two!");
        let alias = dir.path().join(".").join("out.bin");
        let e = write_atomic(&alias, b"x", &[&out]).unwrap_err().to_string();
        assert!(e.contains("it is the input"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"two!");
        // Nothing left behind but the output.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // The output's folder does not exist: the temporary file cannot be made.
        let out = dir.path().join("missing").join("out.bin");
        assert!(write_atomic(&out, b"x", &[]).is_err());
        // A failed write of an existing output: the old bytes stay, nothing is left behind.
        let keep = dir.path().join("keep.bin");
        std::fs::write(&keep, b"old").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(write_atomic(&dir.path().join("sub"), b"new", &[]).is_err());
        assert!(write_atomic(&keep, b"new", &[&keep]).is_err());
        assert_eq!(std::fs::read(&keep).unwrap(), b"old");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "temporary file left behind: {left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_output_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        write_atomic(&out, b"one", &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o644
        );
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&out, b"two", &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
