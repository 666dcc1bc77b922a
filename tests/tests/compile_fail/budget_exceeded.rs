//! A firmware whose memory budget is smaller than the plan's peak must not compile.

use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, Plan, PosKind, RunConfig, plan};

const CFG: ModelConfig = ModelConfig {
    arch: Arch::Bert,
    vocab_size: 30522,
    d_model: 384,
    n_layers: 6,
    n_heads: 12,
    n_kv_heads: 12,
    head_dim: 32,
    d_ff: 1536,
    max_seq: 512,
    type_vocab_size: 2,
    norm: Norm::LayerNorm,
    norm_eps: 1e-12,
    act: Activation::GeluErf,
    ffn: FfnKind::Plain,
    pos: PosKind::Learned,
    rope_theta: 10000.0,
    causal: false,
    tie_embeddings: false,
};
const RUN: RunConfig = RunConfig { seq_len: 128, chunk: 16, k_attn: Some(32), k_ff: None };
const PLAN: Plan = plan(&CFG, &RUN);

const BUDGET: usize = 256 * 1024;
const _: () = assert!(PLAN.peak_bytes <= BUDGET, "the model does not fit the RAM budget");

fn main() {}
