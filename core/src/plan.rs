//! The memory plan (skeleton: completed by the engine work).

use crate::Error;
use crate::config::{ModelConfig, RunConfig};

/// Byte size of every working buffer of one inference, and the peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plan {
    /// Largest number of arena bytes in use at once: the arena size to provide.
    pub peak_bytes: usize,
    /// For comparison only: bytes of the `n_heads x N x N` f32 score matrix that vanilla
    /// attention materialises per layer.
    pub vanilla_scores_bytes: usize,
}

/// The plan, checked: a typed error for an invalid model or run configuration.
pub const fn try_plan(model: &ModelConfig, run: &RunConfig) -> Result<Plan, Error> {
    if let Err(e) = model.validate() {
        return Err(e);
    }
    if let Err(e) = run.validate(model) {
        return Err(e);
    }
    let n = run.seq_len;
    Ok(Plan {
        peak_bytes: 0,
        vanilla_scores_bytes: model.n_heads * n * n * 4,
    })
}

/// The plan, for `const` items: fails compilation when the configuration is invalid.
pub const fn plan(model: &ModelConfig, run: &RunConfig) -> Plan {
    match try_plan(model, run) {
        Ok(p) => p,
        Err(_) => panic!("invalid model or run configuration"),
    }
}
