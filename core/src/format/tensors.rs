//! The tensor table: entries (name, dtype, shape, where the bytes are), the dtype codes, and
//! zero-copy views of a tensor's bytes for compute.

use half::f16;

use super::bytes::{le_u32, le_u64, put_u32, put_u64, range, sat, search};
use super::header::ALIGN;
use crate::Error;
use crate::kernels::{BLOCK, BlockType, DType, Matrix, Weights};
use crate::name::MAX_NAME_BYTES;

/// Size of one tensor table entry, bytes.
pub const TENSOR_ENTRY_BYTES: usize = 72;
/// Largest tensor rank.
pub const MAX_RANK: usize = 4;

/// One tensor table entry as stored: [`TENSOR_ENTRY_BYTES`] bytes, little-endian, at byte
/// offsets 0 `name_offset` (u32), 4 `name_len` (u32), 8 `dtype` (u32), 12 `rank` (u32), 16
/// `shape` (4 x u32), 32 `data_offset` (u64), 40 `data_len` (u64), 48 `scales_offset` (u64),
/// 56 `scales_len` (u64), 64 `group` (u32), 68 reserved (u32, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorEntry {
    /// Offset of the name in the names section, bytes.
    pub name_offset: u32,
    /// Length of the name, bytes.
    pub name_len: u32,
    /// Element type code (f32 0, f16 1, int8 2, int4 grouped 3 reserved, ggml blocks
    /// [`DTYPE_BLOCK_BASE`] + ggml's type code).
    pub dtype: u32,
    /// Number of dimensions, 1..=4.
    pub rank: u32,
    /// Dimensions, outermost first; unused ones are 0.
    pub shape: [u32; MAX_RANK],
    /// Offset of the data from the start of the file, bytes.
    pub data_offset: u64,
    /// Length of the data, bytes.
    pub data_len: u64,
    /// Offset of the int8 row scales (f32), bytes; 0 when none.
    pub scales_offset: u64,
    /// Length of the scales, bytes; 0 when none.
    pub scales_len: u64,
    /// Weights per block: 32 for ggml block types, 0 for the others.
    pub group: u32,
}

/// dtype code of f32 tensors.
pub const DTYPE_F32: u32 = 0;
/// dtype code of f16 tensors.
pub const DTYPE_F16: u32 = 1;
/// dtype code of int8 tensors with per-row f32 scales.
pub const DTYPE_I8: u32 = 2;
/// dtype code reserved for int4 tensors with grouped scales (not supported yet).
pub const DTYPE_I4_GROUPED: u32 = 3;

/// dtype codes of ggml block types are this plus ggml's type code: `Q4_0` 0x102, `Q4_1`
/// 0x103, `Q5_0` 0x106, `Q5_1` 0x107, `Q8_0` 0x108.
pub const DTYPE_BLOCK_BASE: u32 = 0x100;

/// The file code of a dtype.
pub fn dtype_code(d: DType) -> u32 {
    match d {
        DType::F32 => DTYPE_F32,
        DType::F16 => DTYPE_F16,
        DType::I8 => DTYPE_I8,
        DType::Block(t) => DTYPE_BLOCK_BASE + t.ggml_code(),
    }
}

/// The dtype of file code `code`, `None` for unknown codes (and the reserved int4 code).
pub fn dtype_of_code(code: u32) -> Option<DType> {
    Some(match code {
        DTYPE_F32 => DType::F32,
        DTYPE_F16 => DType::F16,
        DTYPE_I8 => DType::I8,
        c if c > DTYPE_BLOCK_BASE => DType::Block(BlockType::from_ggml_code(c - DTYPE_BLOCK_BASE)?),
        _ => return None,
    })
}

/// Bytes of the data of `elements` values of `d` whose last dimension is `cols` (int8 scales
/// not counted): `None` on overflow, or for a block type when `cols` is not a whole number of
/// blocks.
pub fn data_bytes(d: DType, elements: usize, cols: usize) -> Option<usize> {
    match d {
        DType::F32 => elements.checked_mul(4),
        DType::F16 => elements.checked_mul(2),
        DType::I8 => Some(elements),
        DType::Block(t) => {
            if cols == 0 || !cols.is_multiple_of(BLOCK) {
                return None;
            }
            t.matrix_bytes(elements / cols, cols)
        }
    }
}

impl TensorEntry {
    /// The entry's bytes.
    pub fn encode(&self) -> [u8; TENSOR_ENTRY_BYTES] {
        let mut b = [0u8; TENSOR_ENTRY_BYTES];
        put_u32(&mut b, 0, self.name_offset);
        put_u32(&mut b, 4, self.name_len);
        put_u32(&mut b, 8, self.dtype);
        put_u32(&mut b, 12, self.rank);
        for (i, d) in self.shape.iter().enumerate() {
            put_u32(&mut b, 16 + 4 * i, *d);
        }
        put_u64(&mut b, 32, self.data_offset);
        put_u64(&mut b, 40, self.data_len);
        put_u64(&mut b, 48, self.scales_offset);
        put_u64(&mut b, 56, self.scales_len);
        put_u32(&mut b, 64, self.group);
        b
    }

    /// Reads an entry from exactly [`TENSOR_ENTRY_BYTES`] bytes (no checks).
    pub fn decode(b: &[u8]) -> TensorEntry {
        TensorEntry {
            name_offset: le_u32(b, 0),
            name_len: le_u32(b, 4),
            dtype: le_u32(b, 8),
            rank: le_u32(b, 12),
            shape: core::array::from_fn(|i| le_u32(b, 16 + 4 * i)),
            data_offset: le_u64(b, 32),
            data_len: le_u64(b, 40),
            scales_offset: le_u64(b, 48),
            scales_len: le_u64(b, 56),
            group: le_u32(b, 64),
        }
    }
}

/// A tensor of a packed file: name, dtype, shape and its bytes (zero-copy).
#[derive(Debug, Clone, Copy)]
pub struct TensorInfo<'a> {
    /// Full name (see the module docs for the scheme).
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    rank: usize,
    shape: [usize; MAX_RANK],
    /// The elements, row-major, little-endian.
    pub data: &'a [u8],
    /// int8 row scales (f32, little-endian); empty for other dtypes.
    pub scales: &'a [u8],
}

/// A tensor viewed for compute: a matrix (2-D, any dtype) or a vector (1-D, f32).
#[derive(Debug, Clone, Copy)]
pub enum TensorView<'a> {
    /// 1-D f32 values (biases, norm gains).
    Vector(&'a [f32]),
    /// 2-D weights.
    Matrix(Matrix<'a>),
}

impl<'a> TensorInfo<'a> {
    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        // `rank` is 1..=MAX_RANK (checked at parse time).
        self.shape.get(..self.rank).unwrap_or(&[])
    }

    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape().iter().product()
    }

    /// Bytes in the file (data and scales).
    pub fn bytes(&self) -> usize {
        self.data.len() + self.scales.len()
    }

    /// Zero-copy view: 1-D f32 as a slice, 2-D as a [`Matrix`].
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a tensor of rank 3 or 4, or on a big-endian target;
    /// [`Error::Misaligned`] for data not aligned for its element type; the shape errors of
    /// [`Matrix::new`].
    pub fn view(&self) -> Result<TensorView<'a>, Error> {
        if cfg!(target_endian = "big") {
            return Err(Error::Unsupported(
                "viewing little-endian tensors on a big-endian target",
            ));
        }
        let cast_err = Error::Misaligned {
            what: "tensor data",
            align: ALIGN,
        };
        match (self.rank, self.dtype) {
            (1, DType::F32) => Ok(TensorView::Vector(
                bytemuck::try_cast_slice(self.data).map_err(|_| cast_err)?,
            )),
            (2, dtype) => {
                let w = match dtype {
                    DType::F32 => {
                        Weights::F32(bytemuck::try_cast_slice(self.data).map_err(|_| cast_err)?)
                    }
                    DType::F16 => Weights::F16(
                        bytemuck::try_cast_slice::<u8, f16>(self.data).map_err(|_| cast_err)?,
                    ),
                    DType::I8 => Weights::I8 {
                        q: bytemuck::try_cast_slice(self.data).map_err(|_| cast_err)?,
                        scales: bytemuck::try_cast_slice(self.scales).map_err(|_| cast_err)?,
                    },
                    DType::Block(ty) => Weights::Blocks {
                        ty,
                        data: self.data,
                    },
                };
                Ok(TensorView::Matrix(Matrix::new(
                    self.shape[0],
                    self.shape[1],
                    w,
                )?))
            }
            _ => Err(Error::Unsupported("views of tensors of rank 3 or 4")),
        }
    }
}

/// The tensor table of a file and the names and data sections its entries point into.
#[derive(Debug, Clone, Copy)]
pub(super) struct TensorTable<'a> {
    /// The whole file (tensor bytes are checked against it, then against the data section).
    file: &'a [u8],
    table: &'a [u8],
    names: &'a [u8],
    n: usize,
    /// The data section, bytes from the start of the file.
    data_start: usize,
    data_end: usize,
}

impl<'a> TensorTable<'a> {
    /// The `n` entries of `table` (sections already in bounds and aligned), each checked, in
    /// strictly increasing name order; `data` is the data section's range in `file`.
    pub(super) fn parse(
        file: &'a [u8],
        table: &'a [u8],
        names: &'a [u8],
        n: usize,
        data: core::ops::Range<usize>,
    ) -> Result<Self, Error> {
        let t = TensorTable {
            file,
            table,
            names,
            n,
            data_start: data.start,
            data_end: data.end,
        };
        let mut prev: &[u8] = &[];
        for index in 0..n {
            let info = t.entry(index)?;
            if index > 0 && prev >= info.name.as_bytes() {
                return Err(Error::BadTensorEntry {
                    index,
                    problem: "names not sorted or not unique",
                });
            }
            prev = info.name.as_bytes();
        }
        Ok(t)
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// The entry called `name`, by binary search over the sorted names.
    pub(super) fn find(&self, name: &str) -> Option<TensorInfo<'a>> {
        let mut hit = None;
        search(self.n, |mid| {
            // Every entry was checked in parse.
            let t = self.entry(mid).ok()?;
            let order = name.as_bytes().cmp(t.name.as_bytes());
            if order.is_eq() {
                hit = Some(t);
            }
            Some(order)
        })?;
        hit
    }

    /// Decodes and checks entry `index` (< n).
    pub(super) fn entry(&self, index: usize) -> Result<TensorInfo<'a>, Error> {
        let bad = |problem| Error::BadTensorEntry { index, problem };
        let e = TensorEntry::decode(
            self.table
                .get(index * TENSOR_ENTRY_BYTES..(index + 1) * TENSOR_ENTRY_BYTES)
                .ok_or(bad("entry outside the tensor table"))?,
        );
        let name_range = range(
            "tensor name",
            e.name_offset.into(),
            e.name_len.into(),
            self.names.len(),
        )
        .map_err(|_| bad("name outside the names section"))?;
        if e.name_len == 0 || e.name_len as usize > MAX_NAME_BYTES {
            return Err(bad("name empty or longer than 128 bytes"));
        }
        let name = core::str::from_utf8(&self.names[name_range])
            .map_err(|_| bad("name is not valid UTF-8"))?;
        let dtype = match (e.dtype, dtype_of_code(e.dtype)) {
            (_, Some(d)) => d,
            (DTYPE_I4_GROUPED, None) => return Err(Error::Unsupported("int4 grouped tensors")),
            (code, None) => {
                return Err(Error::UnknownCode {
                    what: "tensor dtype",
                    code,
                });
            }
        };
        let rank = e.rank as usize;
        if rank == 0 || rank > MAX_RANK {
            return Err(bad("rank must be 1..=4"));
        }
        if e.shape[..rank].contains(&0) || e.shape[rank..].iter().any(|&d| d != 0) {
            return Err(bad("dimensions must be at least 1 (unused ones 0)"));
        }
        if rank == 1 && dtype != DType::F32 {
            return Err(bad("1-D tensors must be f32"));
        }
        let group = if dtype.block().is_some() {
            BLOCK as u32
        } else {
            0
        };
        if e.group != group {
            return Err(bad(
                "group size must be 32 for block types, 0 for the others",
            ));
        }
        if le_u32(self.table, index * TENSOR_ENTRY_BYTES + 68) != 0 {
            return Err(bad("reserved field is not zero"));
        }
        let shape: [usize; MAX_RANK] = core::array::from_fn(|i| e.shape[i] as usize);
        let too_big = bad("element count overflows");
        let elements = shape[..rank]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(too_big)?;
        let rows = shape[..rank - 1].iter().product::<usize>();
        let cols = shape[rank - 1];
        let want = data_bytes(dtype, elements, cols).ok_or(if dtype.block().is_some() {
            bad("rows are not whole blocks of 32")
        } else {
            too_big
        })?;
        let sized = |what, expected: usize, len: u64| {
            if len == expected as u64 {
                return Ok(());
            }
            Err(Error::TensorSize {
                index,
                what,
                expected,
                found: sat(len),
            })
        };
        sized("data", want, e.data_len)?;
        let slice_in_data = |off: u64, len: u64| -> Result<&'a [u8], Error> {
            let r = range("tensor", off, len, self.file.len())
                .map_err(|_| bad("bytes outside the file"))?;
            if r.start < self.data_start || r.end > self.data_end {
                return Err(bad("bytes outside the data section"));
            }
            if r.start % ALIGN != 0 {
                return Err(bad("bytes not aligned to 16"));
            }
            Ok(&self.file[r])
        };
        let bytes = slice_in_data(e.data_offset, e.data_len)?;
        let scales = if dtype == DType::I8 {
            sized("scales", rows.checked_mul(4).ok_or(too_big)?, e.scales_len)?;
            slice_in_data(e.scales_offset, e.scales_len)?
        } else {
            if e.scales_offset != 0 || e.scales_len != 0 {
                return Err(bad("scales on a tensor that is not int8"));
            }
            &[]
        };
        Ok(TensorInfo {
            name,
            dtype,
            rank,
            shape,
            data: bytes,
            scales,
        })
    }
}
