//! The arch kernels against the generic ones: one check per kernel operation, shared by every
//! build that has arch kernels. The host tests instantiate them over proptest strategies
//! (tests/tests/fast_kernels.rs, attn_kernels.rs: x86-64); the wasm test crate over the
//! deterministic [`cases`] (targets/wasm/tests/simd128_kernels.rs: simd128 in node, which
//! includes this file with `#[path]`, as proptest does not run there).
//!
//! A check runs the kernel under test (a parameter: a path or a closure, so that renaming a
//! kernel only touches the line that instantiates its test) and the generic kernel on one
//! case, and asserts that they agree: bit for bit where the design promises it (integer sums,
//! the same float operations in the same order), else within the [`Tol`] the instantiation
//! names. The arch tests reach the generic kernels only through these checks. A check is a
//! function rather than a macro body, so that it is type-checked once and a build without a
//! test harness can call it; [`kernel_test!`] makes one test of a check.
//!
//! Files by kernel family: [`q8`] (int8 products, quantization, the fused int8
//! feed-forward), [`blocks`] and [`blocks_emb`] (block weights times int8 tokens, with their
//! cases; the second not re-exported: its names are the first's), [`float`] (f32 products, activations, normalisation, `exp`), [`attn`] (the
//! attention tiles and the top-k selection); what they share: [`tol`] (tolerances and
//! comparisons), [`product`] (the cases of matrix products); [`cases`], the deterministic
//! cases. Each uses only `topkit` and `std`: the wasm test crate has no other dependency.
//! This file only declares and re-exports them (none imports it back).

pub mod attn;
pub mod blocks;
pub mod blocks_emb;
pub mod cases;
pub mod float;
pub mod product;
pub mod q8;
pub mod tol;

pub use attn::*;
pub use blocks::*;
pub use float::*;
pub use product::*;
pub use q8::*;
pub use tol::{Tol, bits};

/// One test of a check: `name, cases => check(args..)` calls `check(&case, args..)` for each
/// case. The cases are a proptest strategy (`proptest name, strategy => ..`: a `#[test]`
/// under proptest, which needs the crate `proptest`) or an iterator (`#[attr] name, iter =>
/// ..`: one test with that attribute, e.g. `#[wasm_bindgen_test]`).
#[macro_export]
macro_rules! kernel_test {
    (proptest $name:ident, $strategy:expr => $check:path $(, $arg:expr)* $(,)?) => {
        proptest::proptest! {
            #[test]
            fn $name(case in $strategy) {
                $check(&case $(, $arg)*);
            }
        }
    };
    (#[$attr:meta] $name:ident, $cases:expr => $check:path $(, $arg:expr)* $(,)?) => {
        #[$attr]
        fn $name() {
            for case in $cases {
                $check(&case $(, $arg)*);
            }
        }
    };
}
