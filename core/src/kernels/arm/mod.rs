//! Arm kernels: the DSP extension (ARMv7E-M: Cortex-M4, M7; `SMLAD`), compiled when the
//! target has it (`cfg(topkit_arm_dsp)`: feature `arm-dsp` or `target_feature = "dsp"`); the
//! block-weight kernels also need the VFP registers (`target_abi = "eabihf"`).

#[cfg(target_abi = "eabihf")]
mod blocks;
mod q8;

#[cfg(target_abi = "eabihf")]
pub use blocks::*;
pub use q8::*;
