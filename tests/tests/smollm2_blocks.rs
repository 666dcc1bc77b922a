//! SmolLM2-135M-Instruct packed with its GGUF blocks kept (`topkit pack` of the Q4_1 GGUF
//! without `--dtype`: Q4_1 matrices, the Q8_0 embedding, the FFN down projections in ggml's
//! layout `l{i}.ffn.down.w`) against the same GGUF dequantized to f32 (`--dtype f32`, the file
//! tests/tests/smollm2.rs checks against Hugging Face). With the reference kernels a block
//! matrix gives the bits of its dequantized f32 matrix, and a down projection's column adds
//! the bits of its transpose's row adds, so both files give the same logits bit for bit.
//!
//! Bars: the blocks file is at most 1.05 times the GGUF's size; for every golden prompt,
//! teacher-forced on the prompt and the golden greedy continuation (48 tokens, which
//! tests/tests/smollm2.rs pins for the f32 file decoding token by token), the logits at every
//! position are bit-identical to the f32 file's, and their argmax after the prompt is that
//! greedy continuation token for token. Teacher forcing ([`Session::feed_each`] in chunks of
//! 16) decodes each weight block once per chunk instead of once per token: the reference
//! kernels' bits do not depend on the number of tokens per call, so this is the greedy run's
//! arithmetic at a fraction of its time.
//!
//! [`Session::feed_each`]: topkit::decoder::Session::feed_each

use topkit::decoder::Decoder;
use topkit::encoder::layers;
use topkit::format::{PackedModel, TensorName};
use topkit::kernels::{BlockType, DType};
use topkit::sample::argmax;
use topkit::{Arena, RunConfig};
use topkit_tests::smollm2::{blocks_path, gguf_path, golden, packed, packed_blocks};

/// The logits at every position of `ids` (fed in chunks of 16), concatenated.
fn all_logits(dec: &Decoder<'_>, ids: &[u32]) -> Vec<f32> {
    let run = RunConfig::dense(ids.len(), 16);
    let plan = dec.plan(&run).unwrap();
    let mut mem = vec![0u128; plan.peak_bytes / 16];
    let mut arena = Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
    let mut s = dec.start(&run, &mut arena).unwrap();
    let mut out = Vec::new();
    s.feed_each(ids, |_, l| out.extend_from_slice(l)).unwrap();
    assert_eq!(s.high_water(), plan.peak_bytes);
    out
}

#[test]
fn blocks_kept_give_the_f32_run() {
    let size = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().len();
    let (packed_bytes, gguf_bytes) = (size(blocks_path()), size(gguf_path()));
    eprintln!(
        "blocks file {packed_bytes} bytes, GGUF {gguf_bytes} bytes ({:.4}x)",
        packed_bytes as f64 / gguf_bytes as f64
    );
    assert!(packed_bytes as f64 <= 1.05 * gguf_bytes as f64);

    let words = packed_blocks();
    let pm = PackedModel::parse(bytemuck::cast_slice(&words)).unwrap();
    let dtype = |name| pm.matrix(name).unwrap().dtype();
    assert_eq!(
        dtype(TensorName::global("tok_emb")),
        DType::Block(BlockType::Q8_0)
    );
    for i in [0, 29] {
        for n in [
            "q.w",
            "k.w",
            "v.w",
            "o.w",
            "ffn.up.w",
            "ffn.gate.w",
            "ffn.down.w",
        ] {
            assert_eq!(
                dtype(TensorName::layer(i, n)),
                DType::Block(BlockType::Q4_1),
                "{n}"
            );
        }
        assert!(pm.tensor(TensorName::layer(i, "ffn.down_t.w")).is_err());
    }
    let layers_b = layers(&pm).unwrap();
    let blocks = Decoder::from_packed(&pm, &layers_b).unwrap();

    let words_f = packed();
    let pf = PackedModel::parse(bytemuck::cast_slice(&words_f)).unwrap();
    let layers_f = layers(&pf).unwrap();
    let f32s = Decoder::from_packed(&pf, &layers_f).unwrap();

    let (prompts, _) = golden();
    assert_eq!(prompts.len(), 4);
    let v = pm.config().vocab_size;
    for p in &prompts {
        let n_new = p.greedy.len();
        assert_eq!(n_new, 48);
        let mut ids = p.ids.clone();
        ids.extend_from_slice(&p.greedy[..n_new - 1]);
        let ours = all_logits(&blocks, &ids);
        let want = all_logits(&f32s, &ids);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&ours) == bits(&want), "{}: logits differ", p.name);
        let next: Vec<u32> = ours
            .chunks_exact(v)
            .skip(p.ids.len() - 1)
            .map(|l| argmax(l).unwrap())
            .collect();
        let same = next
            .iter()
            .zip(&p.greedy)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{}: logits bit-identical at {} positions, greedy identical for {same}/{n_new} tokens",
            p.name,
            ids.len()
        );
        assert_eq!(next, p.greedy, "{}: greedy continuation", p.name);
    }
}
