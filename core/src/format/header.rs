//! The fixed 128-byte header: magic, version, sizes, CRC-32 and where each section is.

use super::bytes::{le_u32, le_u64, put_u32, put_u64, sat};
use super::crc32::Crc32;
use crate::Error;

/// The first 8 bytes of every packed model file.
pub const MAGIC: [u8; 8] = *b"TOPKIT\0\0";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Size of the file header, bytes.
pub const HEADER_BYTES: usize = 128;
/// Alignment of every section and tensor, relative to the file start, and of the buffer the
/// file is parsed from, bytes.
pub const ALIGN: usize = 16;
/// Byte offset of the CRC-32 field in the header; the CRC covers every other byte of the file.
pub const CRC_OFFSET: usize = 24;

/// A byte range of the file (offset and length, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Section {
    /// Offset from the start of the file, bytes.
    pub offset: u64,
    /// Length, bytes (for the tensor table: number of entries).
    pub len: u64,
}

/// The fixed 128-byte file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Size of the whole file, bytes.
    pub file_bytes: u64,
    /// CRC-32 of the file with the CRC field left out.
    pub crc: u32,
    /// Config section.
    pub config: Section,
    /// Tokenizer section.
    pub tokenizer: Section,
    /// Tensor table: offset (bytes) and number of entries (not bytes).
    pub tensors: Section,
    /// Tensor names (concatenated UTF-8).
    pub names: Section,
    /// Tensor data.
    pub data: Section,
}

impl Header {
    /// The header's bytes ([`MAGIC`], [`VERSION`], sizes, sections).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u32(&mut b, 12, HEADER_BYTES as u32);
        put_u64(&mut b, 16, self.file_bytes);
        put_u32(&mut b, CRC_OFFSET, self.crc);
        let sections = [
            self.config,
            self.tokenizer,
            self.tensors,
            self.names,
            self.data,
        ];
        for (i, s) in sections.iter().enumerate() {
            put_u64(&mut b, 32 + 16 * i, s.offset);
            put_u64(&mut b, 40 + 16 * i, s.len);
        }
        b
    }

    /// Reads and checks the header at the start of `buf` (the whole buffer): magic, version,
    /// sizes (the file must fit in `buf`), reserved fields. Section bounds are checked by
    /// [`PackedModel::parse`](super::PackedModel::parse).
    ///
    /// # Errors
    ///
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Truncated`] when `buf`
    /// ends before the header or the file, [`Error::Malformed`] for a wrong header size, a
    /// file size smaller than the header, or non-zero reserved fields.
    pub fn decode(buf: &[u8]) -> Result<Header, Error> {
        let truncated = |needed: usize| Error::Truncated {
            needed,
            found: buf.len(),
        };
        if buf.len() < MAGIC.len() {
            return Err(truncated(HEADER_BYTES));
        }
        if buf[..MAGIC.len()] != MAGIC {
            return Err(Error::BadMagic);
        }
        if buf.len() < 12 {
            return Err(truncated(HEADER_BYTES));
        }
        let version = le_u32(buf, 8);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        if buf.len() < HEADER_BYTES {
            return Err(truncated(HEADER_BYTES));
        }
        if le_u32(buf, 12) as usize != HEADER_BYTES {
            return Err(Error::Malformed("header size field is not 128"));
        }
        let file_bytes = le_u64(buf, 16);
        if file_bytes > buf.len() as u64 {
            return Err(truncated(sat(file_bytes)));
        }
        if file_bytes < HEADER_BYTES as u64 {
            return Err(Error::Malformed(
                "file size field is smaller than the header",
            ));
        }
        if le_u32(buf, 28) != 0 || buf[112..HEADER_BYTES].iter().any(|&x| x != 0) {
            return Err(Error::Malformed("reserved header fields are not zero"));
        }
        let section = |i: usize| Section {
            offset: le_u64(buf, 32 + 16 * i),
            len: le_u64(buf, 40 + 16 * i),
        };
        Ok(Header {
            file_bytes,
            crc: le_u32(buf, CRC_OFFSET),
            config: section(0),
            tokenizer: section(1),
            tensors: section(2),
            names: section(3),
            data: section(4),
        })
    }
}

/// CRC-32 of a whole file (`file` is exactly the file's bytes), skipping the CRC field.
pub fn file_crc(file: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(&file[..CRC_OFFSET.min(file.len())]);
    if file.len() > CRC_OFFSET + 4 {
        c.update(&file[CRC_OFFSET + 4..]);
    }
    c.finish()
}

/// Rounds `n` up to a multiple of [`ALIGN`] (`None` on overflow).
pub const fn align_up(n: usize) -> Option<usize> {
    match n.checked_add(ALIGN - 1) {
        Some(v) => Some(v / ALIGN * ALIGN),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            file_bytes: 4096,
            crc: 0xDEAD_BEEF,
            config: Section {
                offset: 128,
                len: 96,
            },
            tokenizer: Section {
                offset: 224,
                len: 64,
            },
            tensors: Section {
                offset: 288,
                len: 3,
            },
            names: Section {
                offset: 512,
                len: 20,
            },
            data: Section {
                offset: 544,
                len: 3552,
            },
        };
        let mut buf = [0u8; 4096];
        buf[..HEADER_BYTES].copy_from_slice(&h.encode());
        assert_eq!(Header::decode(&buf), Ok(h));
        assert_eq!(
            Header::decode(&buf[..4095]),
            Err(Error::Truncated {
                needed: 4096,
                found: 4095
            })
        );
    }
}
