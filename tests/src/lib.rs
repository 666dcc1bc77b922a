//! Shared helpers of the integration tests: seeded random weights, naive references, the
//! arch-kernel checks (also run by the wasm test crate) and the cached real models.
#![forbid(unsafe_code)]

pub mod attention_ref;
pub mod cache;
pub mod decoder_ref;
pub mod golden;
pub mod kernel_checks;
pub mod kernels_ref;
pub mod minilm;
pub mod model_ref;
pub mod rng;
pub mod smollm2;
pub mod vocab;
