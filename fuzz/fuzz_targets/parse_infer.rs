//! Parse, then run the encoder on whatever passes validation and is small enough to be fast:
//! a few tokens, an arena of exactly `try_plan`'s peak bytes (capped), top-k or dense attention
//! and feed-forward as the input's last bytes choose. Must give `Ok` or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use topkit::format::{PackedModel, ParseOptions};
use topkit::{Arena, RunConfig, encoder, try_plan};
use topkit_fuzz::{aligned, aligned_view};

/// Largest arena the target makes, bytes (keeps one execution in the millisecond range).
const MAX_ARENA: usize = 4 << 20;
/// Largest number of multiply-adds per token and layer the target runs.
const MAX_WORK: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // The last 4 bytes choose the run; the rest is the file.
    let Some((file, knobs)) = data.split_last_chunk::<4>() else {
        return;
    };
    let buf = aligned(file);
    let Ok(m) = PackedModel::parse_with(
        aligned_view(&buf, file.len()),
        ParseOptions { verify_crc: false },
    ) else {
        return;
    };
    let c = *m.config();
    let work = c
        .d_model
        .saturating_mul(c.d_ff.max(c.d_model).saturating_mul(4));
    if c.n_layers > 8 || work > MAX_WORK || c.vocab_size > 1 << 16 {
        return;
    }
    let Ok(layers) = encoder::layers(&m) else {
        return;
    };
    let enc = encoder::Encoder::from_packed(&m, &layers);
    let seq_len = (usize::from(knobs[0] % 9)).min(c.max_seq);
    let run = RunConfig {
        seq_len,
        chunk: usize::from(knobs[1] % 5),
        k_attn: (knobs[2] & 0x80 != 0).then_some(usize::from(knobs[2] & 0x7f)),
        k_ff: (knobs[3] & 0x80 != 0).then_some(usize::from(knobs[3] & 0x7f)),
    };
    let Ok(plan) = try_plan(&c, &run) else {
        return;
    };
    if plan.peak_bytes > MAX_ARENA {
        return;
    }
    let mut mem = vec![0u128; plan.peak_bytes.div_ceil(16)];
    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).expect("aligned arena");
    // Token ids from the file's first bytes, some out of range on purpose.
    let ids: Vec<u32> = file
        .iter()
        .take(seq_len)
        .map(|&b| u32::from(b) % (c.vocab_size as u32 + 2))
        .collect();
    match enc {
        Ok(enc) => {
            let mut out = vec![0f32; c.d_model];
            let _ = enc.embed(&run, &ids, &mut arena, &mut out);
        }
        // Not a sentence encoder (no pooling, no embeddings, a decoder): the layer stack on
        // hidden states made from the input bytes, with a padding mask from the ids.
        Err(_) => {
            let Ok(model) = topkit::Model::new(c, &layers, m.final_norm().ok().flatten()) else {
                return;
            };
            let x: Vec<f32> = (0..ids.len() * c.d_model)
                .map(|i| f32::from(file[i % file.len()]) / 64.0 - 2.0)
                .collect();
            let valid: Vec<bool> = ids.iter().map(|&id| id % 3 != 0).collect();
            let mask = (knobs[0] & 0x80 != 0).then_some(valid.as_slice());
            let _ = topkit::forward(&model, &run, &x, mask, &mut arena);
        }
    }
    assert!(
        arena.high_water() <= plan.peak_bytes,
        "arena use beyond the plan"
    );
});
