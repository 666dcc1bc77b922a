//! Reading packed files, with errors that name the file.

use std::path::Path;

use anyhow::{Result, anyhow};
use topkit::format::{self, PackedModel, ParseOptions, TENSOR_ENTRY_BYTES, TensorEntry};

use crate::writer::AlignedBytes;

/// Reads a packed file into aligned memory.
///
/// # Errors
/// When `path` cannot be read.
pub fn read_packed(path: &Path) -> Result<AlignedBytes> {
    AlignedBytes::read(path)
}

/// Parses a packed file, with an error that names the file (and the tensor, when a table
/// entry is at fault).
///
/// # Errors
/// When `bytes` is not a valid packed file (or its CRC is wrong when `verify_crc`).
pub fn parse_packed<'a>(path: &Path, bytes: &'a [u8], verify_crc: bool) -> Result<PackedModel<'a>> {
    PackedModel::parse_with(bytes, ParseOptions { verify_crc }).map_err(|e| {
        let hint = match e {
            topkit::Error::BadTensorEntry { index, .. }
            | topkit::Error::TensorSize { index, .. } => raw_tensor_name(bytes, index)
                .map(|n| format!(" (tensor {n:?})"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        anyhow!("{}: {e}{hint}", path.display())
    })
}

/// The name of entry `index` of the tensor table, read without validating the file (for
/// error messages about a file that failed to parse). `None` when it cannot be read.
pub fn raw_tensor_name(bytes: &[u8], index: usize) -> Option<String> {
    let header = format::Header::decode(bytes).ok()?;
    let u = |v: u64| usize::try_from(v).ok();
    let at = u(header.tensors.offset)?.checked_add(index.checked_mul(TENSOR_ENTRY_BYTES)?)?;
    let entry = TensorEntry::decode(bytes.get(at..at.checked_add(TENSOR_ENTRY_BYTES)?)?);
    let start = u(header.names.offset)?.checked_add(entry.name_offset as usize)?;
    let name = bytes.get(start..start.checked_add(entry.name_len as usize)?)?;
    Some(String::from_utf8_lossy(name).into_owned())
}
