//! Arm kernels: the DSP extension (ARMv7E-M: Cortex-M4, M7; `SMLAD`), compiled when the
//! target has it (`cfg(topkit_arm_dsp)`: feature `arm-dsp` or `target_feature = "dsp"`).

mod q8;

pub use q8::*;
