#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![doc = include_str!("../README.md")]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod arena;
pub mod attention;
pub mod config;
mod error;
pub mod ffn;
pub mod kernels;
pub mod math;
pub mod plan;
pub mod tokenizer;

pub use arena::{Arena, ArenaStorage};
pub use config::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind, RunConfig};
pub use error::Error;
pub use plan::{Plan, plan, try_plan};
