//! Scalar math shim. Default (no_std): `micromath` approximations. Feature `std`: the std f32
//! functions (full precision). Every kernel calls these, never `f32::exp` & co directly.

#[cfg(not(feature = "std"))]
use micromath::F32Ext;

/// `e^x`.
#[inline]
pub fn exp(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.exp()
    }
    #[cfg(not(feature = "std"))]
    {
        F32Ext::exp(x)
    }
}

/// Square root.
#[inline]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.sqrt()
    }
    #[cfg(not(feature = "std"))]
    {
        F32Ext::sqrt(x)
    }
}
