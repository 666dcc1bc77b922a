//! Shared helpers of the integration tests: seeded random weights and naive references.
#![forbid(unsafe_code)]
pub mod vocab;
