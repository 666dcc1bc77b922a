#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![doc = include_str!("../README.md")]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod arena;
pub mod config;
mod error;
pub mod format;
pub mod kernels;
pub mod math;
pub mod model;
mod name;
pub mod plan;
pub mod sample;
pub mod tokenizer;
pub mod topk;

#[cfg(feature = "alloc")]
pub use arena::ArenaBuf;
pub use arena::{Arena, ArenaStorage};
pub use config::{Activation, Arch, FfnKind, KvType, ModelConfig, Norm, PosKind, RunConfig};
pub use decoder::{Decoder, Session};
pub use error::Error;
pub use model::{LayerWeights, Model, NormWeights, forward};
pub use model::{attention, decoder, encoder, ffn};
pub use plan::{Plan, plan, plan_kv, plan_with, try_plan, try_plan_kv, try_plan_with};
