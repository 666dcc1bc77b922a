//! Little-endian fields, byte ranges and the binary search the sections share.

use core::cmp::Ordering;
use core::ops::Range;

use crate::Error;

// The readers' callers check the buffer's length first; reading through `first_chunk` (0 past
// the end, never in practice) keeps a panic branch out of every inlined copy.
pub(super) fn le_u32(b: &[u8], off: usize) -> u32 {
    debug_assert!(off.checked_add(4).is_some_and(|e| e <= b.len()));
    b.get(off..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |a| u32::from_le_bytes(*a))
}

pub(super) fn le_u64(b: &[u8], off: usize) -> u64 {
    debug_assert!(off.checked_add(8).is_some_and(|e| e <= b.len()));
    b.get(off..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |a| u64::from_le_bytes(*a))
}

pub(super) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `v` as a `usize`, `usize::MAX` when it does not fit (sizes in error values).
pub(super) fn sat(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// `offset..offset + len` as a range of a buffer of `size` bytes, or `OutOfBounds`.
pub(super) fn range(
    what: &'static str,
    offset: u64,
    len: u64,
    size: usize,
) -> Result<Range<usize>, Error> {
    let oob = Error::OutOfBounds {
        what,
        offset: sat(offset),
        len: sat(len),
        size,
    };
    let start = usize::try_from(offset).map_err(|_| oob)?;
    let n = usize::try_from(len).map_err(|_| oob)?;
    let end = start.checked_add(n).ok_or(oob)?;
    if end > size {
        return Err(oob);
    }
    Ok(start..end)
}

pub(super) fn aligned(what: &'static str, offset: usize, align: usize) -> Result<(), Error> {
    if !offset.is_multiple_of(align) {
        return Err(Error::Misaligned { what, align });
    }
    Ok(())
}

/// Binary search over the `n` items of a sorted table: `key_vs(i)` orders the key against
/// item `i` (`None` gives up). The position of the item equal to the key, if any.
pub(super) fn search(n: usize, mut key_vs: impl FnMut(usize) -> Option<Ordering>) -> Option<usize> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match key_vs(mid)? {
            Ordering::Equal => return Some(mid),
            Ordering::Less => hi = mid,
            Ordering::Greater => lo = mid + 1,
        }
    }
    None
}

/// A view of little-endian u32 values (read with `from_le_bytes`, so unaligned is fine).
#[derive(Debug, Clone, Copy)]
pub(super) struct U32s<'a>(pub(super) &'a [u8]);

impl U32s<'_> {
    /// Value `i`, 0 past the end: a table that was not checked
    /// ([`PackedModel::parse_again`](super::PackedModel::parse_again)) can hold indices past
    /// its neighbours' ends, which must read as nothing, not panic.
    pub(super) fn get(&self, i: usize) -> u32 {
        i.checked_mul(4)
            .and_then(|at| self.0.get(at..))
            .and_then(<[u8]>::first_chunk)
            .map_or(0, |a| u32::from_le_bytes(*a))
    }
}
