//! SmolLM2-135M-Instruct end to end (packed f32 file -> decoder with KV cache -> greedy), against
//! Hugging Face transformers on the same Q4_1 GGUF (tests/data/smollm2_golden.json, made by
//! tools/reference/smollm2_golden.py). Q4_1 and Q8_0 dequantize exactly to f32, so the error
//! budget is float rounding (and, in the micromath build, its `exp` in SiLU and softmax).
//!
//! Bars, for every golden prompt (two plain, two in the chat template):
//! - the greedy continuation equals the reference's for all 48 tokens (the issue asks for 32);
//! - at the reference's logged steps (0, 1, 8, 24, 47), each of its 64 largest logits, and the
//!   log-sum-exp over the vocabulary, within [`TOL_LOGIT`] (absolute; logits reach 30).

use topkit::decoder::Decoder;
use topkit::encoder::layers;
use topkit::format::PackedModel;
use topkit::sample::argmax;
use topkit::{Arena, RunConfig};
use topkit_tests::smollm2::{golden, packed};

/// Measured: 4.3e-5 (std), 1.3e-2 (micromath). The micromath error is of the order of the
/// smallest top-1/top-2 margin of the reference (0.0068, chat_gravity), yet its greedy tokens
/// were all identical too (a build's bits are the same on every run, so this does not flake;
/// a change of kernels or math could flip that token in the micromath build).
const TOL_LOGIT: f64 = if cfg!(feature = "std") { 2e-4 } else { 3e-2 };

fn logsumexp(x: &[f32]) -> f64 {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

#[test]
fn greedy_continuations_and_logits_match_the_reference() {
    let words = packed();
    let pm = PackedModel::parse(bytemuck::cast_slice(&words)).unwrap();
    let layers = layers(&pm).unwrap();
    let dec = Decoder::from_packed(&pm, &layers).unwrap();
    let (prompts, _) = golden();
    assert_eq!(prompts.len(), 4);
    for p in &prompts {
        let n_new = p.greedy.len();
        assert_eq!(n_new, 48);
        let run = RunConfig::dense(p.ids.len() + n_new, 16);
        let plan = dec.plan(&run).unwrap();
        let mut mem = vec![0u128; plan.peak_bytes / 16];
        let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
        let mut s = dec.start(&run, &mut arena).unwrap();
        let mut logits = s.feed(&p.ids).unwrap().to_vec();
        let mut ours = Vec::new();
        let mut worst: f64 = 0.0;
        for step in 0..n_new {
            if let Some(g) = p.steps.iter().find(|g| g.step == step) {
                for &(id, want) in &g.top {
                    worst = worst.max((logits[id as usize] as f64 - want).abs());
                }
                worst = worst.max((logsumexp(&logits) - g.logsumexp).abs());
            }
            let id = argmax(&logits).unwrap();
            ours.push(id);
            if step + 1 < n_new {
                logits = s.feed(&[id]).unwrap().to_vec();
            }
        }
        assert_eq!(s.high_water(), plan.peak_bytes);
        let same = ours
            .iter()
            .zip(&p.greedy)
            .take_while(|(a, b)| a == b)
            .count();
        let min_margin = p.margins.iter().cloned().fold(f64::INFINITY, f64::min);
        eprintln!(
            "{}: {} prompt tokens, greedy identical for {same}/{n_new} tokens (smallest reference margin {min_margin:.4}), max logit error {worst:.2e} (tolerance {TOL_LOGIT:.0e})",
            p.name,
            p.ids.len()
        );
        assert_eq!(ours, p.greedy, "{}: greedy continuation", p.name);
        assert!(worst <= TOL_LOGIT, "{}: logit error {worst}", p.name);
    }
}
