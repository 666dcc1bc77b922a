//! The config section: the [`ModelConfig`], the pooling and the normalisation of embeddings.

use super::bytes::{le_u32, put_u32};
use crate::Error;
use crate::config::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind};

/// Size of the config section, bytes.
pub const CONFIG_BYTES: usize = 96;

/// How sentence embeddings are pooled from the token states (sentence-transformers models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Pooling {
    /// No pooling recorded (a language model, or a bare encoder).
    None,
    /// The first token's state (`[CLS]`).
    Cls,
    /// Mean over the non-padding tokens.
    Mean,
}

/// The config section: the model's shape and how its output is pooled.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileConfig {
    /// The model.
    pub model: ModelConfig,
    /// Sentence-embedding pooling.
    pub pooling: Pooling,
    /// L2-normalise the pooled embedding.
    pub normalize: bool,
}

fn dim_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl FileConfig {
    /// The section's bytes. Dimensions above `u32::MAX` are written as `u32::MAX`, which
    /// [`FileConfig::decode`] rejects (validate the config first).
    pub fn encode(&self) -> [u8; CONFIG_BYTES] {
        let m = &self.model;
        let mut b = [0u8; CONFIG_BYTES];
        let words = [
            match m.arch {
                Arch::Bert => 0,
                Arch::Llama => 1,
            },
            dim_u32(m.vocab_size),
            dim_u32(m.d_model),
            dim_u32(m.n_layers),
            dim_u32(m.n_heads),
            dim_u32(m.n_kv_heads),
            dim_u32(m.head_dim),
            dim_u32(m.d_ff),
            dim_u32(m.max_seq),
            dim_u32(m.type_vocab_size),
            match m.norm {
                Norm::LayerNorm => 0,
                Norm::RmsNorm => 1,
            },
            m.norm_eps.to_bits(),
            match m.act {
                Activation::Relu => 0,
                Activation::GeluErf => 1,
                Activation::GeluTanh => 2,
                Activation::Silu => 3,
            },
            match m.ffn {
                FfnKind::Plain => 0,
                FfnKind::Gated => 1,
            },
            match m.pos {
                PosKind::Learned => 0,
                PosKind::Rope => 1,
            },
            m.rope_theta.to_bits(),
            u32::from(m.causal),
            u32::from(m.tie_embeddings),
            match self.pooling {
                Pooling::None => 0,
                Pooling::Cls => 1,
                Pooling::Mean => 2,
            },
            u32::from(self.normalize),
        ];
        for (i, w) in words.iter().enumerate() {
            put_u32(&mut b, 4 * i, *w);
        }
        b
    }

    /// Reads the section (exactly [`CONFIG_BYTES`] bytes) and validates the model config.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for a section of another length or non-zero reserved words;
    /// [`Error::UnknownCode`] for an enum code or flag out of range; [`Error::InvalidConfig`]
    /// for a negative or non-finite `rope_theta` and the errors of [`ModelConfig::validate`].
    pub fn decode(b: &[u8]) -> Result<FileConfig, Error> {
        if b.len() != CONFIG_BYTES {
            return Err(Error::Malformed("config section is not 96 bytes"));
        }
        let w = |i: usize| le_u32(b, 4 * i);
        let code = |what: &'static str, i: usize, n: u32| -> Result<u32, Error> {
            let c = w(i);
            if c < n {
                Ok(c)
            } else {
                Err(Error::UnknownCode { what, code: c })
            }
        };
        if (20..24).any(|i| w(i) != 0) {
            return Err(Error::Malformed("reserved config words are not zero"));
        }
        let norm_eps = f32::from_bits(w(11));
        let rope_theta = f32::from_bits(w(15));
        if !rope_theta.is_finite() || rope_theta < 0.0 {
            return Err(Error::InvalidConfig(
                "rope_theta must be finite and non-negative",
            ));
        }
        let model = ModelConfig {
            arch: [Arch::Bert, Arch::Llama][code("arch", 0, 2)? as usize],
            vocab_size: w(1) as usize,
            d_model: w(2) as usize,
            n_layers: w(3) as usize,
            n_heads: w(4) as usize,
            n_kv_heads: w(5) as usize,
            head_dim: w(6) as usize,
            d_ff: w(7) as usize,
            max_seq: w(8) as usize,
            type_vocab_size: w(9) as usize,
            norm: [Norm::LayerNorm, Norm::RmsNorm][code("norm", 10, 2)? as usize],
            norm_eps,
            act: [
                Activation::Relu,
                Activation::GeluErf,
                Activation::GeluTanh,
                Activation::Silu,
            ][code("activation", 12, 4)? as usize],
            ffn: [FfnKind::Plain, FfnKind::Gated][code("ffn kind", 13, 2)? as usize],
            pos: [PosKind::Learned, PosKind::Rope][code("position kind", 14, 2)? as usize],
            rope_theta,
            causal: code("causal flag", 16, 2)? == 1,
            tie_embeddings: code("tie_embeddings flag", 17, 2)? == 1,
        };
        let pooling =
            [Pooling::None, Pooling::Cls, Pooling::Mean][code("pooling", 18, 3)? as usize];
        let normalize = code("normalize flag", 19, 2)? == 1;
        model.validate()?;
        Ok(FileConfig {
            model,
            pooling,
            normalize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code of every enum and flag, on SmolLM2-135M's dimensions (grouped-query
    /// attention, so that `n_kv_heads` is not `n_heads`).
    #[test]
    fn every_config_code_round_trips() {
        let archs = [Arch::Bert, Arch::Llama];
        let norms = [Norm::LayerNorm, Norm::RmsNorm];
        let acts = [
            Activation::Relu,
            Activation::GeluErf,
            Activation::GeluTanh,
            Activation::Silu,
        ];
        let ffns = [FfnKind::Plain, FfnKind::Gated];
        let poss = [PosKind::Learned, PosKind::Rope];
        let poolings = [Pooling::None, Pooling::Cls, Pooling::Mean];
        // Mixed radix over (arch, norm, act, ffn, pos, pooling, causal, tie, normalize).
        let radix = [2, 2, 4, 2, 2, 3, 2, 2, 2];
        for i in 0..radix.iter().product::<usize>() {
            let mut digits = [0usize; 9];
            let mut rest = i;
            for (d, r) in digits.iter_mut().zip(radix) {
                (*d, rest) = (rest % r, rest / r);
            }
            let [arch, norm, act, ffn, pos, pooling, causal, tie, normalize] = digits;
            let cfg = FileConfig {
                model: ModelConfig {
                    arch: archs[arch],
                    vocab_size: 49152,
                    d_model: 576,
                    n_layers: 30,
                    n_heads: 9,
                    n_kv_heads: 3,
                    head_dim: 64,
                    d_ff: 1536,
                    max_seq: 2048,
                    type_vocab_size: 2 * (1 - arch),
                    norm: norms[norm],
                    norm_eps: 1e-5,
                    act: acts[act],
                    ffn: ffns[ffn],
                    pos: poss[pos],
                    rope_theta: 100000.0,
                    causal: causal == 1,
                    tie_embeddings: tie == 1,
                },
                pooling: poolings[pooling],
                normalize: normalize == 1,
            };
            let b = cfg.encode();
            assert_eq!(FileConfig::decode(&b), Ok(cfg));
            // The codes are the documented ones, at their documented words.
            let words = [0, 10, 12, 13, 14, 18, 16, 17, 19].map(|w| le_u32(&b, 4 * w) as usize);
            assert_eq!(words, digits, "config {i}");
            // A NaN norm_eps (word 11) or rope_theta (word 15) is refused.
            for word in [11, 15] {
                let mut bad = b;
                bad[4 * word..4 * word + 4].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
                assert!(matches!(
                    FileConfig::decode(&bad),
                    Err(Error::InvalidConfig(_))
                ));
            }
        }
    }
}
