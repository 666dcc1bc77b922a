//! Scalar math shim: `micromath` approximations by default, the std f32 functions with
//! feature `std` (skeleton).

/// `e^x`.
pub fn exp(x: f32) -> f32 {
    let _ = x;
    todo!()
}

/// Square root.
pub fn sqrt(x: f32) -> f32 {
    let _ = x;
    todo!()
}
