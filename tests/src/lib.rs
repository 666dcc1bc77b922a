//! Shared helpers of the integration tests: seeded random weights and naive references.
#![forbid(unsafe_code)]

pub mod attention_ref;
pub mod decoder_ref;
pub mod kernel_checks;
pub mod kernels_ref;
pub mod minilm;
pub mod model_ref;
pub mod rng;
pub mod smollm2;
pub mod vocab;
