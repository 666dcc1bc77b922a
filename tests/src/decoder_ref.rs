//! Seeded random causal language models (a [`OwnedModel`] plus embeddings and an output
//! head) and their naive f64 reference: embed the whole sequence, run the full-sequence
//! reference layer stack with a causal mask, then the output head on every position.

use topkit::kernels::Kernels;
use topkit::{Decoder, LayerWeights, ModelConfig};

use crate::model_ref::{Dt, OwnedMatrix, OwnedModel, Rng};

/// A random causal LM with owned weights.
pub struct OwnedLm {
    /// The layer stack (and final norm).
    pub model: OwnedModel,
    /// Token embeddings, `vocab_size x d_model`.
    pub tok_emb: OwnedMatrix,
    /// Output head (`vocab_size x d_model`) when the embeddings are not tied.
    pub lm_head: Option<OwnedMatrix>,
}

impl OwnedLm {
    /// Seeded random weights for `config` (causal, pre-norm); matrices stored as `dt`, the
    /// embeddings too. `tie_embeddings` in the config decides whether there is an `lm_head`.
    /// Every block is pre-norm, so the small embedding rows (+-1/sqrt(d_model)) are fine.
    pub fn random(config: ModelConfig, dt: Dt, seed: u64) -> Self {
        let model = OwnedModel::random(config, dt, seed);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let (v, d) = (config.vocab_size, config.d_model);
        // OwnedMatrix::random draws in +-1/sqrt(cols); that is what an output head wants.
        let tok_emb = OwnedMatrix::random(&mut rng, v, d, dt);
        let lm_head = (!config.tie_embeddings).then(|| OwnedMatrix::random(&mut rng, v, d, dt));
        OwnedLm {
            model,
            tok_emb,
            lm_head,
        }
    }

    /// The engine's decoder over `views` (from `self.model.layer_views()`).
    pub fn decoder<'a>(&'a self, views: &'a [LayerWeights<'a>]) -> Decoder<'a> {
        self.decoder_with(views, Kernels::Reference)
    }

    /// [`OwnedLm::decoder`] with its layer stack run by `kernels`.
    pub fn decoder_with<'a>(
        &'a self,
        views: &'a [LayerWeights<'a>],
        kernels: Kernels,
    ) -> Decoder<'a> {
        Decoder::new(
            self.model.model(views).with_kernels(kernels),
            self.tok_emb.view(),
            None,
            self.lm_head.as_ref().map(OwnedMatrix::view),
        )
        .expect("random LM matches its config")
    }

    /// Reference logits (f64) of every position of `ids`: `ids.len()` rows of `vocab_size`.
    pub fn reference_logits(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let c = &self.model.config;
        let d = c.d_model;
        // The embedding rows as the engine reads them (f16 and int8 values are exact in f32
        // up to the int8 scale product, rounded once).
        let input: Vec<f32> = ids
            .iter()
            .flat_map(|&id| {
                let r = id as usize * d;
                self.tok_emb.exact[r..r + d].iter().map(|&x| x as f32)
            })
            .collect();
        let hidden = self.model.reference(&input, None);
        let head = self.lm_head.as_ref().unwrap_or(&self.tok_emb);
        hidden.chunks(d).map(|h| head.apply(h, None)).collect()
    }
}
