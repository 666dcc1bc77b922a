//! The int8 token vocabulary shared by every kernel: token groups of [`Q8_GROUP`] tokens,
//! activation blocks of [`Q8_BLOCK`] columns with one scale each, the sizes of an
//! int8-activation scratch, and [`Q8Tokens`], tokens quantized once for many products.

/// Longest row (elements) the int8-activation kernels quantize; longer rows take the
/// f32-activation path ([`super::matmul`]). It bounds the working buffers: one group of
/// [`Q8_GROUP`] quantized tokens is at most `Q8_GROUP * Q8_MAX_COLS` bytes (64 KiB), the
/// most [`q8_groups`] puts in one pass.
pub const Q8_MAX_COLS: usize = 4096;

/// Tokens the per-token int8 kernels quantize (and arch kernels pack) at a time: one AVX-512
/// register of 16 lanes.
pub const Q8_GROUP: usize = 16;

/// Columns per activation scale of [`super::matmul_i8_i8_token`]: each token's row is quantized in
/// blocks of this many elements, each with its own scale (the last block shorter). A multiple
/// of 4.
pub const Q8_BLOCK: usize = 64;

// A block of weights ([`super::BLOCK`]) lies under one activation block.
const _: () = assert!(Q8_BLOCK.is_multiple_of(super::blocks::BLOCK));

/// Scales per token of a `cols`-wide row in [`super::matmul_q8_tokens`] (`cols.div_ceil(Q8_BLOCK)`).
pub const fn q8_blocks(cols: usize) -> usize {
    cols.div_ceil(Q8_BLOCK)
}

/// Most groups of [`Q8_GROUP`] tokens one pass of the int8-activation product quantizes before
/// it multiplies (the x86-64 kernels take each weight block's sums once for all of them).
pub const Q8_MAX_GROUPS: usize = 16;

/// Groups of [`Q8_GROUP`] tokens one pass of the int8-activation product of `n` tokens of
/// `cols` columns quantizes at once: as many as the tokens fill (`n.div_ceil(Q8_GROUP)`), at
/// most what 64 KiB of activations (`Q8_MAX_COLS / cols` groups) and 8 KiB of scales
/// (`128 / q8_blocks(cols)` groups) hold, at most [`Q8_MAX_GROUPS`], at least one. 0 when
/// `n == 0`, `cols == 0` or `cols > Q8_MAX_COLS` (those rows take the f32-activation path).
pub const fn q8_groups(cols: usize, n: usize) -> usize {
    if n == 0 || cols == 0 || cols > Q8_MAX_COLS {
        return 0;
    }
    let need = n.div_ceil(Q8_GROUP);
    let mut fit = Q8_MAX_COLS / cols;
    let by_scales = 128 / q8_blocks(cols);
    if by_scales < fit {
        fit = by_scales;
    }
    if fit > Q8_MAX_GROUPS {
        fit = Q8_MAX_GROUPS;
    }
    if fit == 0 {
        fit = 1;
    }
    if need < fit { need } else { fit }
}

/// f32 words of one group of [`Q8_GROUP`] quantized tokens of `cols` columns in an
/// int8-activation scratch: `Q8_GROUP * cols` int8 values and `Q8_GROUP * q8_blocks(cols)` f32
/// scales, `4 * cols + 16 * q8_blocks(cols)` words.
pub const fn q8_group_words(cols: usize) -> usize {
    Q8_GROUP * cols / 4 + Q8_GROUP * q8_blocks(cols)
}

/// Bytes of the int8-activation scratch of a product of up to `n` tokens of `cols` columns
/// (what [`super::Kernels::matmul`] with [`super::Kernels::Fast`] and int8 weights needs): [`q8_groups`]`(cols, n)` groups of `16 * cols + 64 * q8_blocks(cols)` bytes, the int8
/// activations of all groups first, then their scales. Every group has [`Q8_GROUP`] token
/// slots, a short last one included (the x86-64 kernels pack whole groups). A multiple of 16.
pub const fn q8_scratch_bytes(cols: usize, n: usize) -> usize {
    4 * q8_groups(cols, n) * q8_group_words(cols)
}

/// Int8 token rows, row-major: `n` tokens of `q.len() / n` values each and their scales, one
/// per block of [`Q8_BLOCK`] columns (`s[token * blocks + block]`), as
/// [`super::quantize_i8_token`] writes them.
#[derive(Debug, Clone, Copy)]
pub struct Q8Rows<'a> {
    /// Quantized values, `n * cols`.
    pub q: &'a [i8],
    /// Scales, `n * q8_blocks(cols)`.
    pub s: &'a [f32],
    /// Tokens.
    pub n: usize,
}

/// Int8 activations of some tokens, quantized once by [`super::Kernels::quantize_q8`] into a
/// scratch, in the layout of the chosen kernels, for any number of products by
/// [`super::Kernels::matmul_q8`].
pub struct Q8Tokens<'s> {
    /// Tokens.
    pub(super) n: usize,
    /// Columns per token.
    pub(super) cols: usize,
    pub(super) layout: Q8Layout<'s>,
}

pub(super) enum Q8Layout<'s> {
    /// Row-major int8 rows and `[token][block]` scales ([`super::quantize_i8_token`]).
    Rows(Q8Rows<'s>),
    /// The packed groups of the x86-64 AVX-512 VNNI kernels.
    #[cfg(topkit_x86)]
    Packed { px: &'s [u32], sx: &'s [f32] },
}

impl Q8Tokens<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Columns per token.
    pub fn cols(&self) -> usize {
        self.cols
    }
}
