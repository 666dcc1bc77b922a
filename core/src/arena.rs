//! The arena: one caller-owned block of bytes that the engine slices into typed buffers.
//!
//! Nothing is allocated. Every buffer starts on an [`ALIGN`]-byte boundary and its size is
//! rounded up to a multiple of [`ALIGN`], exactly as [`crate::plan()`] counts it, so the
//! high-water mark measured after a run can be compared byte for byte with the plan.

use crate::Error;

/// Alignment of the arena base and of every buffer in it, in bytes.
pub const ALIGN: usize = 16;

/// Rounds a byte count up to the arena alignment.
pub const fn padded(bytes: usize) -> usize {
    (bytes + (ALIGN - 1)) & !(ALIGN - 1)
}

/// Statically sized, 16-byte aligned storage for an arena, e.g. a firmware's
/// `static mut ARENA: ArenaStorage<{ PLAN.peak_bytes }>`.
#[repr(C, align(16))]
pub struct ArenaStorage<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> ArenaStorage<N> {
    /// Zeroed storage; `const` so it can initialise a `static`.
    pub const fn new() -> Self {
        ArenaStorage { bytes: [0; N] }
    }

    /// An arena over the whole storage.
    pub fn arena(&mut self) -> Arena<'_> {
        // The storage is aligned by its type, so this cannot fail.
        Arena {
            rest: &mut self.bytes,
            base: 0,
            used: 0,
            high_water: 0,
        }
    }
}

impl<const N: usize> Default for ArenaStorage<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Heap storage for an arena (feature `alloc`), for models known only at run time: one
/// allocation of exactly the bytes asked for (e.g. [`crate::Plan::peak_bytes`]), made once
/// before inference and reused by every run.
///
/// The arena starts on a [`ArenaBuf::LINE`]-byte (cache line) boundary rather than just
/// [`ALIGN`]: the plan's buffers are multiples of a row, so with a line-aligned base the rows
/// of keys and values that attention reads do not straddle cache lines (a large allocation
/// from the system allocator typically starts 16 bytes past a page boundary).
#[cfg(feature = "alloc")]
pub struct ArenaBuf {
    /// Zeroed storage, 16-byte aligned by its element type, `LINE - 16` bytes longer than
    /// asked so that a line boundary lies within reach of its start.
    mem: alloc::vec::Vec<u128>,
    /// Offset of the first line boundary in `mem`, in bytes (a multiple of 16, `< LINE`).
    start: usize,
    /// Bytes the arena gets.
    len: usize,
}

#[cfg(feature = "alloc")]
impl ArenaBuf {
    /// Alignment of the arena start, in bytes.
    pub const LINE: usize = 64;

    /// Zeroed storage for an arena of `bytes` bytes. When the allocator cannot give them, the
    /// process aborts, as for any `Vec`: use [`ArenaBuf::try_new`] when `bytes` comes from
    /// input.
    pub fn new(bytes: usize) -> Self {
        let mem = alloc::vec![0u128; Self::words(bytes).unwrap_or(usize::MAX)];
        Self::at_line(mem, bytes)
    }

    /// Zeroed storage for an arena of `bytes` bytes, or an error when the allocator cannot
    /// give them (a size from a file or an argument should never abort the process).
    ///
    /// # Errors
    ///
    /// A `TryReserveError` when the allocation fails or its size overflows.
    pub fn try_new(bytes: usize) -> Result<Self, alloc::collections::TryReserveError> {
        let mut mem = alloc::vec::Vec::new();
        // On overflow, asking for usize::MAX words makes `try_reserve` report it.
        let words = Self::words(bytes).unwrap_or(usize::MAX);
        mem.try_reserve_exact(words)?;
        mem.resize(words, 0u128);
        Ok(Self::at_line(mem, bytes))
    }

    /// 16-byte words of storage an arena of `bytes` bytes takes (with the line slack).
    fn words(bytes: usize) -> Option<usize> {
        bytes.div_ceil(16).checked_add((Self::LINE - 16) / 16)
    }

    fn at_line(mem: alloc::vec::Vec<u128>, bytes: usize) -> Self {
        let addr = mem.as_ptr() as usize;
        let start = addr.next_multiple_of(Self::LINE) - addr;
        ArenaBuf {
            mem,
            start,
            len: bytes,
        }
    }

    /// Bytes the arena gets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for an arena of 0 bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A fresh arena over the whole storage (high-water mark 0; the bytes keep what the last
    /// run left, and every buffer is zeroed when taken).
    pub fn arena(&mut self) -> Arena<'_> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.mem);
        // `start < LINE` and `mem` holds `len + LINE - 16` bytes or more, with `start` a
        // multiple of 16: the range is in bounds.
        let rest = bytes
            .get_mut(self.start..self.start + self.len)
            .unwrap_or_default();
        Arena {
            rest,
            base: 0,
            used: 0,
            high_water: 0,
        }
    }
}

/// A bump allocator over `&mut [u8]` that hands out disjoint typed slices.
///
/// Scopes ([`Arena::scope`]) let phases of the computation reuse the same bytes; the
/// high-water mark is the largest offset (in bytes from the arena start) ever handed out.
///
/// # Example
///
/// A persistent buffer, then two phases that reuse the same bytes:
///
/// ```
/// use topkit::{ArenaStorage, Error};
///
/// let mut storage = ArenaStorage::<256>::new();
/// let mut arena = storage.arena();
/// let hidden: &mut [f32] = arena.take(4)?; // 16 bytes, kept
/// hidden[0] = 1.0;
/// arena.scope(|phase| -> Result<(), Error> {
///     let scratch: &mut [f32] = phase.take(20)?; // 80 bytes, given back at the end
///     scratch.fill(2.0);
///     Ok(())
/// })?;
/// arena.scope(|phase| phase.take::<u16>(9).map(|_| ()))?; // 18 bytes, padded to 32
/// assert_eq!(arena.used(), 16);
/// assert_eq!(arena.high_water(), 16 + 80);
/// // More than is free: an error, and nothing is taken.
/// assert!(matches!(arena.take::<f32>(100), Err(Error::ArenaTooSmall { .. })));
/// assert_eq!(arena.remaining(), 256 - 16);
/// # Ok::<(), Error>(())
/// ```
pub struct Arena<'a> {
    rest: &'a mut [u8],
    /// Offset of `rest` from the start of the outermost arena, in bytes.
    base: usize,
    /// Bytes handed out by this arena (not counting `base`).
    used: usize,
    /// Largest `base + used` seen here or in any nested scope, in bytes.
    high_water: usize,
}

impl<'a> Arena<'a> {
    /// An arena over caller memory, which must start on a 16-byte boundary.
    ///
    /// # Errors
    ///
    /// [`Error::ArenaMisaligned`] when `bytes` does not start on a 16-byte boundary.
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, Error> {
        if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::ArenaMisaligned);
        }
        Ok(Arena {
            rest: bytes,
            base: 0,
            used: 0,
            high_water: 0,
        })
    }

    /// Largest number of bytes in use at any moment so far, from the arena start.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Bytes handed out by this arena and its parents, from the arena start.
    pub fn used(&self) -> usize {
        self.base + self.used
    }

    /// Bytes still free.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes `n` bytes (rounded up to [`ALIGN`]), zeroed.
    ///
    /// # Errors
    ///
    /// [`Error::ArenaTooSmall`] when fewer than `padded(n)` bytes are free (nothing is taken).
    pub fn take_bytes(&mut self, n: usize) -> Result<&'a mut [u8], Error> {
        let size = padded(n);
        if size > self.rest.len() {
            return Err(Error::ArenaTooSmall {
                needed: self.base + self.used + size,
                available: self.base + self.used + self.rest.len(),
            });
        }
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(size);
        self.rest = tail;
        self.used += size;
        self.high_water = self.high_water.max(self.base + self.used);
        head.fill(0);
        // `n <= padded(n) == head.len()`; the checked split keeps a panic branch out.
        Ok(head.split_at_mut_checked(n).unwrap_or_default().0)
    }

    /// Takes a zeroed slice of `n` values of a plain-old-data type (`f32`, `u16`, `i8`, ...).
    ///
    /// # Errors
    ///
    /// [`Error::ArenaTooSmall`] as [`Arena::take_bytes`] (`needed` is `usize::MAX` when
    /// `n` values overflow a byte count); [`Error::ArenaMisaligned`] for a type aligned to
    /// more than [`ALIGN`] bytes.
    pub fn take<T: bytemuck::Pod>(&mut self, n: usize) -> Result<&'a mut [T], Error> {
        let bytes = n
            .checked_mul(core::mem::size_of::<T>())
            .ok_or(Error::ArenaTooSmall {
                needed: usize::MAX,
                available: self.remaining(),
            })?;
        let raw = self.take_bytes(bytes)?;
        // Every buffer starts on a 16-byte boundary and ALIGN >= align_of::<T>() for the
        // element types the engine uses, so this cast cannot fail.
        bytemuck::try_cast_slice_mut(raw).map_err(|_| Error::ArenaMisaligned)
    }

    /// Runs `f` with a nested arena over the free bytes; whatever `f` takes is given back
    /// when it returns (the bytes are reused by the next scope), while the high-water mark
    /// keeps what `f` used.
    pub fn scope<R>(&mut self, f: impl FnOnce(&mut Arena<'_>) -> R) -> R {
        let mut inner = Arena {
            rest: &mut *self.rest,
            base: self.base + self.used,
            used: 0,
            high_water: 0,
        };
        let r = f(&mut inner);
        self.high_water = self.high_water.max(inner.high_water);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_aligns_and_counts() {
        let mut storage = ArenaStorage::<256>::new();
        let mut arena = storage.arena();
        let a: &mut [f32] = arena.take(3).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(arena.used(), 16);
        let b: &mut [u16] = arena.take(9).unwrap();
        assert_eq!(b.len(), 9);
        assert_eq!(arena.used(), 48);
        assert_eq!(arena.high_water(), 48);
    }

    #[test]
    fn scopes_reuse_bytes_and_keep_high_water() {
        let mut storage = ArenaStorage::<256>::new();
        let mut arena = storage.arena();
        let _x: &mut [f32] = arena.take(4).unwrap();
        arena.scope(|s| {
            let _y: &mut [f32] = s.take(20).unwrap();
        });
        arena.scope(|s| {
            let _z: &mut [f32] = s.take(8).unwrap();
        });
        assert_eq!(arena.used(), 16);
        assert_eq!(arena.high_water(), 16 + 80);
    }

    #[test]
    fn too_small_is_an_error() {
        let mut storage = ArenaStorage::<32>::new();
        let mut arena = storage.arena();
        let err = arena.take::<f32>(9).unwrap_err();
        assert_eq!(
            err,
            Error::ArenaTooSmall {
                needed: 48,
                available: 32
            }
        );
    }

    #[test]
    fn misaligned_memory_is_rejected() {
        let mut storage = ArenaStorage::<64>::new();
        let bytes = &mut storage.bytes[1..];
        assert!(matches!(Arena::new(bytes), Err(Error::ArenaMisaligned)));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn arena_buf_is_line_aligned_and_exact() {
        for n in [0, 1, 15, 16, 17, 63, 64, 65, 1000, 98_720] {
            let mut buf = if n % 2 == 0 {
                ArenaBuf::new(n)
            } else {
                ArenaBuf::try_new(n).unwrap()
            };
            assert_eq!(buf.len(), n);
            let mut arena = buf.arena();
            assert_eq!(arena.remaining(), n);
            if n >= 16 {
                let first: &mut [u8] = arena.take(16).unwrap();
                assert_eq!(first.as_ptr() as usize % ArenaBuf::LINE, 0);
            }
            let rest = arena.remaining();
            assert!(arena.take::<u8>(rest + 1).is_err());
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn an_arena_too_large_is_an_error_not_an_abort() {
        // More than any address space gives (and the word count overflows).
        assert!(ArenaBuf::try_new(usize::MAX).is_err());
        assert!(ArenaBuf::try_new(usize::MAX / 2).is_err());
    }
}
