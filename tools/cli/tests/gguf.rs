//! `topkit pack model.gguf`: a tiny GGUF written here round-trips into the expected tensors
//! (RoPE permutation undone, down projection transposed, tied embeddings); each quant type
//! dequantizes a hand-built block; malformed files give exit code 2 and a message, never a
//! panic; and the real SmolLM2-135M-Instruct (fetched by `cargo xtask fetch-model`; these
//! tests fail, not skip, when it is absent) packs into the weights `transformers` loads.

mod common;

use std::path::PathBuf;

use common::{Lcg, cache_dir, cached, pack, read, s, topkit, transpose};
use topkit::format::{PackedModel, Special, TokenizerKind};
use topkit_cli::import::gguf::{self, GgmlType, Gguf};

// ---------------------------------------------------------------- a tiny GGUF writer

enum Kv {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

struct T {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn str_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, s);
    out
}

/// A metadata array: element type `ety`, length, the elements' bytes.
fn array(ety: u32, items: impl ExactSizeIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = ety.to_le_bytes().to_vec();
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    items.for_each(|i| out.extend(i));
    out
}

fn write_gguf(kv: &[(&str, Kv)], tensors: &[T]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        put_str(&mut out, k);
        // The type code, then the value; an array is its element type, length and elements.
        let (ty, value) = match v {
            Kv::U32(x) => (4u32, x.to_le_bytes().to_vec()),
            Kv::F32(x) => (6, x.to_le_bytes().to_vec()),
            Kv::Str(s) => (8, str_bytes(s)),
            Kv::Strs(v) => (9, array(8, v.iter().map(|s| str_bytes(s)))),
            Kv::I32s(v) => (9, array(5, v.iter().map(|x| x.to_le_bytes().to_vec()))),
        };
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&value);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    let start = out.len();
    for (t, o) in tensors.iter().zip(offsets) {
        out.resize(start + o as usize, 0);
        out.extend_from_slice(&t.data);
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q4_1 blocks of `v` (a multiple of 32 values), quantized simply; returns the bytes and the
/// values they stand for (computed independently of the reader: d * q + m in f32).
fn q4_1(v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut out = Vec::new();
    let mut back = Vec::new();
    for blk in v.chunks(32) {
        let lo = blk.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = blk.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let d = half::f16::from_f32((hi - lo) / 15.0);
        let m = half::f16::from_f32(lo);
        let (df, mf) = (d.to_f32(), m.to_f32());
        let q: Vec<u8> = blk
            .iter()
            .map(|&x| {
                if df == 0.0 {
                    0
                } else {
                    ((x - mf) / df).round().clamp(0.0, 15.0) as u8
                }
            })
            .collect();
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        for j in 0..16 {
            out.push(q[j] | (q[j + 16] << 4));
        }
        back.extend(q.iter().map(|&q| f32::from(q) * df + mf));
    }
    (out, back)
}

/// A tiny llama: 2 layers, d 64, 2 heads of 32 (1 KV head), d_ff 96, vocab 40 (tokens of a
/// byte-level BPE), Q4_1 matrices, f32 norms, tied embeddings.
struct Tiny {
    bytes: Vec<u8>,
    /// Values each GGUF tensor stands for, as [rows, cols] row-major (file order).
    values: Vec<(String, Vec<usize>, Vec<f32>)>,
}

const D: usize = 64;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HD: usize = 32;
const FF: usize = 96;
const LAYERS: usize = 2;

fn tiny_tokens() -> Vec<String> {
    let mut t: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in "abcdefghijklmnopqrstuvwxyz".chars() {
        t.push(c.to_string());
    }
    for s in [
        "Ġ", "Ġa", "ab", "abc", "Ġab", "cd", "xy", "xyz", "Ġt", "th", "the",
    ] {
        t.push(s.to_string());
    }
    t
}

fn tiny() -> Tiny {
    let mut rng = Lcg::new(7);
    let mut tensors = Vec::new();
    let mut values = Vec::new();
    let vocab = tiny_tokens();
    let v = vocab.len();
    let mut mat = |name: String, rows: usize, cols: usize, tensors: &mut Vec<T>| {
        let raw: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let (data, back) = q4_1(&raw);
        tensors.push(T {
            name: name.clone(),
            dims: vec![cols as u64, rows as u64],
            ty: 3,
            data,
        });
        values.push((name, vec![rows, cols], back));
    };
    mat("token_embd.weight".into(), v, D, &mut tensors);
    for i in 0..LAYERS {
        mat(
            format!("blk.{i}.attn_q.weight"),
            HEADS * HD,
            D,
            &mut tensors,
        );
        mat(
            format!("blk.{i}.attn_k.weight"),
            KV_HEADS * HD,
            D,
            &mut tensors,
        );
        mat(
            format!("blk.{i}.attn_v.weight"),
            KV_HEADS * HD,
            D,
            &mut tensors,
        );
        mat(
            format!("blk.{i}.attn_output.weight"),
            D,
            HEADS * HD,
            &mut tensors,
        );
        mat(format!("blk.{i}.ffn_gate.weight"), FF, D, &mut tensors);
        mat(format!("blk.{i}.ffn_up.weight"), FF, D, &mut tensors);
        mat(format!("blk.{i}.ffn_down.weight"), D, FF, &mut tensors);
    }
    let norm = |name: String, tensors: &mut Vec<T>, values: &mut Vec<_>| {
        let w: Vec<f32> = (0..D).map(|j| 1.0 + 0.01 * j as f32).collect();
        tensors.push(T {
            name: name.clone(),
            dims: vec![D as u64],
            ty: 0,
            data: f32_bytes(&w),
        });
        values.push((name, vec![D], w));
    };
    for i in 0..LAYERS {
        norm(
            format!("blk.{i}.attn_norm.weight"),
            &mut tensors,
            &mut values,
        );
        norm(
            format!("blk.{i}.ffn_norm.weight"),
            &mut tensors,
            &mut values,
        );
    }
    norm("output_norm.weight".into(), &mut tensors, &mut values);
    let merges = [
        "Ġ a", "a b", "ab c", "Ġ ab", "c d", "x y", "xy z", "Ġ t", "t h", "th e",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let kv = vec![
        ("general.architecture", Kv::Str("llama")),
        ("general.alignment", Kv::U32(32)),
        ("llama.block_count", Kv::U32(LAYERS as u32)),
        ("llama.context_length", Kv::U32(128)),
        ("llama.embedding_length", Kv::U32(D as u32)),
        ("llama.feed_forward_length", Kv::U32(FF as u32)),
        ("llama.attention.head_count", Kv::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Kv::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base", Kv::F32(100000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5)),
        ("llama.vocab_size", Kv::U32(v as u32)),
        ("tokenizer.ggml.model", Kv::Str("gpt2")),
        ("tokenizer.ggml.pre", Kv::Str("smollm")),
        ("tokenizer.ggml.tokens", Kv::Strs(vocab)),
        (
            "tokenizer.ggml.token_type",
            Kv::I32s((0..v).map(|i| if i < 3 { 3 } else { 1 }).collect()),
        ),
        ("tokenizer.ggml.merges", Kv::Strs(merges)),
        ("tokenizer.ggml.bos_token_id", Kv::U32(1)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Kv::U32(0)),
    ];
    Tiny {
        bytes: write_gguf(&kv, &tensors),
        values,
    }
}

fn tensor_values(m: &PackedModel<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = m
        .find(name)
        .unwrap_or_else(|| panic!("packed file lacks {name}"));
    (t.shape().to_vec(), topkit_cli::pack::dequantize(&t))
}

/// HF row order from llama.cpp's: HF row h*hd + i*hd/2 + j is GGUF row h*hd + 2j + i
/// (written independently of the reader, row by row).
fn hf_rows(v: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = Vec::with_capacity(v.len());
    for r in 0..rows {
        let (h, within) = (r / hd, r % hd);
        let (i, j) = (within / (hd / 2), within % (hd / 2));
        let src = h * hd + 2 * j + i;
        out.extend_from_slice(&v[src * cols..(src + 1) * cols]);
    }
    out
}

fn write_tmp(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

#[test]
fn tiny_gguf_packs_into_the_expected_tensors() {
    let tiny = tiny();
    let (dir, src) = write_tmp(&tiny.bytes);
    let out = pack(&src, &dir.path().join("m.tkm"), &["--dtype", "f32"]);
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    let c = *m.config();
    assert_eq!(
        (
            c.d_model,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.d_ff
        ),
        (D, LAYERS, HEADS, KV_HEADS, HD, FF)
    );
    assert_eq!(c.vocab_size, tiny_tokens().len());
    assert!(c.tie_embeddings && c.causal);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(
        c.max_seq, 128,
        "default max_seq = context_length when below the cap"
    );
    // Every packed tensor holds exactly the values its Q4_1 blocks stand for (f32 is exact).
    let mut checked = 0;
    for (gname, shape, want) in &tiny.values {
        let (ours, want_shape, want) = if gname == "token_embd.weight" {
            ("tok_emb".to_string(), shape.clone(), want.clone())
        } else if gname == "output_norm.weight" {
            ("final_norm.w".to_string(), shape.clone(), want.clone())
        } else {
            let parts: Vec<&str> = gname.split('.').collect();
            let (i, what) = (parts[1], parts[2]);
            match what {
                "attn_q" => (
                    format!("l{i}.q.w"),
                    shape.clone(),
                    hf_rows(want, shape[0], shape[1], HEADS),
                ),
                "attn_k" => (
                    format!("l{i}.k.w"),
                    shape.clone(),
                    hf_rows(want, shape[0], shape[1], KV_HEADS),
                ),
                "attn_v" => (format!("l{i}.v.w"), shape.clone(), want.clone()),
                "attn_output" => (format!("l{i}.o.w"), shape.clone(), want.clone()),
                "ffn_gate" => (format!("l{i}.ffn.gate.w"), shape.clone(), want.clone()),
                "ffn_up" => (format!("l{i}.ffn.up.w"), shape.clone(), want.clone()),
                "ffn_down" => (
                    format!("l{i}.ffn.down_t.w"),
                    vec![shape[1], shape[0]],
                    transpose(want, shape[0], shape[1]),
                ),
                "attn_norm" => (format!("l{i}.attn_norm.w"), shape.clone(), want.clone()),
                "ffn_norm" => (format!("l{i}.ffn_norm.w"), shape.clone(), want.clone()),
                other => panic!("unexpected {other}"),
            }
        };
        let (got_shape, got) = tensor_values(&m, &ours);
        assert_eq!(got_shape, want_shape, "{ours}");
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ours} differs from its dequantized source"
        );
        checked += 1;
    }
    assert_eq!(checked, m.tensor_count());
    assert!(m.find("lm_head.w").is_none());
    // The tokenizer: byte-level BPE with its merges as id pairs in rank order.
    let t = m.tokenizer();
    assert_eq!(t.kind(), TokenizerKind::Bpe);
    assert_eq!(t.n_merges(), 10);
    let tokens = tiny_tokens();
    let id = |s: &str| tokens.iter().position(|t| t == s).unwrap() as u32;
    assert_eq!(t.merge(0), Some((id("Ġ"), id("a"))));
    assert_eq!(t.merge(9), Some((id("th"), id("e"))));
    assert_eq!(t.special(Special::Bos), Some(1));
    assert_eq!(t.special(Special::Eos), Some(2));
    // The core builds the model from it.
    let layers: Vec<_> = (0..LAYERS).map(|i| m.layer_weights(i).unwrap()).collect();
    topkit::Model::new(*m.config(), &layers, m.final_norm().unwrap()).unwrap();
}

/// Without `--dtype` the Q4_1 blocks are kept byte for byte (the down projection in ggml's
/// layout as `l{i}.ffn.down.w`, the Q/K rows un-permuted as whole rows), they stand for the
/// values of the `--dtype f32` pack, the file is about the GGUF's size, and the reference
/// kernels give the same logits bit for bit from both files. `inspect` and `budget` report
/// the block dtype and its bytes.
#[test]
fn tiny_gguf_keeps_its_blocks() {
    use topkit::decoder::Decoder;
    use topkit::kernels::{BlockType, DType};
    let tiny = tiny();
    let (dir, src) = write_tmp(&tiny.bytes);
    let kept = read(&pack(&src, &dir.path().join("k.tkm"), &[]));
    let full = read(&pack(&src, &dir.path().join("f.tkm"), &["--dtype", "f32"]));
    let mk = PackedModel::parse(kept.as_slice()).unwrap();
    let mf = PackedModel::parse(full.as_slice()).unwrap();
    assert!(kept.as_slice().len() < tiny.bytes.len() + 4096);
    assert_eq!(mk.tensor_count(), mf.tensor_count());
    for t in mf.tensors() {
        let (name, want) = match t.name.strip_suffix(".ffn.down_t.w") {
            // Kept untransposed: its transpose is the f32 pack's down_t.
            Some(l) => {
                assert!(mk.find(t.name).is_none(), "{}", t.name);
                let (shape, v) = tensor_values(&mf, t.name);
                (
                    format!("{l}.ffn.down.w"),
                    (vec![shape[1], shape[0]], transpose(&v, shape[0], shape[1])),
                )
            }
            None => (t.name.to_string(), tensor_values(&mf, t.name)),
        };
        let k = mk.find(&name).unwrap_or_else(|| panic!("{name}"));
        let want_dtype = if t.shape().len() == 2 {
            DType::Block(BlockType::Q4_1)
        } else {
            DType::F32
        };
        assert_eq!(k.dtype, want_dtype, "{name}");
        let got = tensor_values(&mk, &name);
        assert_eq!(got.0, want.0, "{name}");
        assert!(
            got.1
                .iter()
                .zip(&want.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
    }
    let logits = |m: &PackedModel<'_>| {
        let layers: Vec<_> = (0..LAYERS).map(|i| m.layer_weights(i).unwrap()).collect();
        let dec = Decoder::from_packed(m, &layers).unwrap();
        let run = topkit::RunConfig::dense(24, 4);
        let plan = dec.plan(&run).unwrap();
        let mut mem = vec![0u128; plan.peak_bytes / 16];
        let mut arena = topkit::Arena::new(bytemuck::cast_slice_mut(&mut mem)).unwrap();
        let mut sess = dec.start(&run, &mut arena).unwrap();
        let ids: Vec<u32> = (0..10).map(|i| (i * 7 + 3) % 20).collect();
        let mut out = Vec::new();
        sess.feed_each(&ids, |_, l| out.extend(l.iter().map(|x| x.to_bits())))
            .unwrap();
        for id in [4, 9] {
            out.extend(sess.feed(&[id]).unwrap().iter().map(|x| x.to_bits()));
        }
        out
    };
    assert_eq!(logits(&mk), logits(&mf));
    // inspect and budget: per-tensor block type, bytes per dtype.
    let k = dir.path().join("k.tkm");
    let o = topkit(&["inspect", "--json", s(&k)]);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let q = &j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "l0.ffn.down.w")
        .unwrap();
    assert_eq!(
        (q["dtype"].as_str(), q["block_type"].as_str()),
        (Some("q4_1"), Some("Q4_1"))
    );
    let by = &j["bytes_by_dtype"]["q4_1"];
    let want: usize = mk
        .tensors()
        .filter(|t| t.shape().len() == 2)
        .map(|t| t.bytes())
        .sum();
    assert_eq!(by["bytes"].as_u64(), Some(want as u64));
    let o = topkit(&["budget", "--json", "--seq", "16", s(&k)]);
    let b: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(b["flash"]["weight_bytes_by_dtype"], j["bytes_by_dtype"]);
    let o = topkit(&["budget", "--seq", "16", s(&k)]);
    assert!(
        o.stdout.contains("q4_1 ") && o.stdout.contains(&format!("({want} bytes,")),
        "{}",
        o.stdout
    );
}

#[test]
fn max_seq_and_int8() {
    let tiny = tiny();
    let (dir, src) = write_tmp(&tiny.bytes);
    let out = pack(
        &src,
        &dir.path().join("m.tkm"),
        &["--dtype", "int8", "--max-seq", "64"],
    );
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    assert_eq!(m.config().max_seq, 64);
    let o = topkit(&[
        "pack",
        s(&src),
        "-o",
        s(&dir.path().join("x.tkm")),
        "--max-seq",
        "129",
    ]);
    o.assert_error("--max-seq");
}

// ---------------------------------------------------------------- dequantization by hand

fn h(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[test]
fn q4_0_block() {
    // d = 0.5: element j (< 16) is the low nibble of byte j, element j + 16 the high nibble.
    let mut b = h(0.5).to_vec();
    for j in 0..16u8 {
        b.push(j | ((15 - j) << 4));
    }
    let v = gguf::dequantize(GgmlType::Q4_0, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(v[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
    }
}

#[test]
fn q4_1_block() {
    // d = 0.25, m = -1: x = q d + m.
    let mut b = h(0.25).to_vec();
    b.extend_from_slice(&h(-1.0));
    for j in 0..16u8 {
        b.push(j | (3 << 4));
    }
    let v = gguf::dequantize(GgmlType::Q4_1, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(v[j], j as f32 * 0.25 - 1.0);
        assert_eq!(v[j + 16], 3.0 * 0.25 - 1.0);
    }
}

#[test]
fn q8_0_block() {
    let mut b = h(0.125).to_vec();
    for j in 0..32i16 {
        b.push((j * 8 - 128) as i8 as u8);
    }
    let v = gguf::dequantize(GgmlType::Q8_0, &b, 32).unwrap();
    for (j, &x) in v.iter().enumerate() {
        assert_eq!(x, (j as f32 * 8.0 - 128.0) * 0.125);
    }
}

#[test]
fn f16_f32_bf16() {
    let v = gguf::dequantize(GgmlType::F16, &[h(1.5), h(-2.0)].concat(), 2).unwrap();
    assert_eq!(v, [1.5, -2.0]);
    let v = gguf::dequantize(GgmlType::F32, &f32_bytes(&[3.25, -0.5]), 2).unwrap();
    assert_eq!(v, [3.25, -0.5]);
    let v = gguf::dequantize(GgmlType::Bf16, &[0x80, 0x3f, 0x00, 0xc0], 2).unwrap();
    assert_eq!(v, [1.0, -2.0]);
    // Wrong sizes are errors.
    assert!(gguf::dequantize(GgmlType::Q4_1, &[0; 19], 32).is_err());
    assert!(gguf::dequantize(GgmlType::Q8_0, &[0; 34], 31).is_err());
}

// ---------------------------------------------------------------- malformed files

fn rejects(bytes: &[u8], what: &str) {
    assert!(
        Gguf::parse(bytes).is_err() || gguf::source(&Gguf::parse(bytes).unwrap(), None).is_err(),
        "{what}: accepted"
    );
    let (dir, p) = write_tmp(bytes);
    let o = topkit(&["pack", s(&p), "-o", s(&dir.path().join("o.tkm"))]);
    assert_eq!(o.code, 2, "{what}: exit code {}\n{}", o.code, o.stderr);
    assert!(
        o.stderr.contains("rror"),
        "{what}: no error message: {}",
        o.stderr
    );
    assert!(
        !dir.path().join("o.tkm").exists(),
        "{what}: wrote an output"
    );
}

/// Byte offset of tensor info `name` (its name string) in a file made by `write_gguf`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let good = tiny().bytes;
    Gguf::parse(&good).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [
        0,
        3,
        4,
        8,
        20,
        30,
        100,
        1000,
        good.len() / 2,
        good.len() - 1,
    ] {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    let mut b = good.clone();
    b[0] = b'X';
    cases.push(("bad magic".into(), b));
    for v in [0u32, 1, 4, u32::MAX] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        cases.push((format!("version {v}"), b));
    }
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge tensor count".into(), b));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    cases.push(("huge metadata count".into(), b));
    // The first key's length.
    let mut b = good.clone();
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge key length".into(), b));
    // The tokens array length (just after its element type).
    let key = find(&good, b"tokenizer.ggml.tokens");
    let len_at = key + "tokenizer.ggml.tokens".len() + 8;
    let mut b = good.clone();
    b[len_at..len_at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    cases.push(("huge array length".into(), b));
    let mut b = good.clone();
    b[len_at - 4..len_at].copy_from_slice(&77u32.to_le_bytes());
    cases.push(("unknown array element type".into(), b));
    let mut b = good.clone();
    b[len_at - 8..len_at - 4].copy_from_slice(&99u32.to_le_bytes());
    cases.push(("unknown value type".into(), b));
    // Tensor info of token_embd: name, n_dims, dims, type, offset.
    let t = find(&good, b"token_embd.weight") + "token_embd.weight".len();
    let (nd, d0, ty, off) = (t, t + 4, t + 20, t + 24);
    let mut b = good.clone();
    b[nd..nd + 4].copy_from_slice(&9u32.to_le_bytes());
    cases.push(("9 dimensions".into(), b));
    let mut b = good.clone();
    b[d0..d0 + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    cases.push(("huge dimension".into(), b));
    let mut b = good.clone();
    b[d0..d0 + 8].copy_from_slice(&0u64.to_le_bytes());
    cases.push(("zero dimension".into(), b));
    for code in [14u32, 99] {
        let mut b = good.clone();
        b[ty..ty + 4].copy_from_slice(&code.to_le_bytes());
        cases.push((format!("tensor type {code}"), b));
    }
    let mut b = good.clone();
    b[off..off + 8].copy_from_slice(&(good.len() as u64).next_multiple_of(32).to_le_bytes());
    cases.push(("offset beyond the file".into(), b));
    let mut b = good.clone();
    b[off..off + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    cases.push(("offset overflowing".into(), b));
    let mut b = good.clone();
    b[off..off + 8].copy_from_slice(&4u64.to_le_bytes());
    cases.push(("misaligned offset".into(), b));
    let mut b = good.clone();
    let arch = find(&good, b"llama");
    b[arch..arch + 5].copy_from_slice(b"gpt2x");
    cases.push(("unknown architecture".into(), b));
    for (what, bytes) in &cases {
        rejects(bytes, what);
    }
}

// ---------------------------------------------------------------- the real SmolLM2

fn smollm2_gguf() -> PathBuf {
    cached(
        cache_dir().join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "fetch-model",
    )
}

#[test]
fn smollm2_tensor_types_and_config() {
    let bytes = std::fs::read(smollm2_gguf()).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    let count = |ty: u32| g.tensors.iter().filter(|t| t.ty == ty).count();
    // Q4_1 matrices, F32 norms, a Q8_0 token embedding; no output head (tied).
    assert_eq!((count(3), count(0), count(8)), (210, 61, 1));
    let src = gguf::source(&g, None).unwrap();
    let c = src.config.model;
    assert_eq!(
        (
            c.vocab_size,
            c.d_model,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.d_ff
        ),
        (49152, 576, 30, 9, 3, 1536)
    );
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tie_embeddings);
    assert_eq!(c.max_seq, gguf::DEFAULT_MAX_SEQ_CAP);
    assert_eq!(src.tokenizer.tokens.len(), 49152);
    assert_eq!(src.tokenizer.merges.len(), 48900);
}

/// Every fingerprinted tensor of tests/data/smollm2_weights.json (from `transformers` loading
/// the same GGUF) matches the packed f32 file: sums within 1e-9 relative (f64 summation order
/// differs), the sampled rows bit for bit (both dequantize Q4_1 and Q8_0 exactly).
#[test]
fn smollm2_f32_pack_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let out = pack(
        &smollm2_gguf(),
        &dir.path().join("s.tkm"),
        &["--dtype", "f32", "--max-seq", "256"],
    );
    let bytes = read(&out);
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/smollm2_weights.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let tensors = golden["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 20);
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let (shape, v) = tensor_values(&m, name);
        let want_shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{name}");
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let abs: f64 = v.iter().map(|&x| f64::from(x).abs()).sum();
        let wsum: f64 = v
            .iter()
            .enumerate()
            .map(|(i, &x)| f64::from(x) * ((i % 7) as f64 - 3.0))
            .sum();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(
            close(abs, t["abs_sum"].as_f64().unwrap()),
            "{name}: abs sum {abs}"
        );
        assert!(close(sum, t["sum"].as_f64().unwrap()), "{name}: sum {sum}");
        assert!(
            close(wsum, t["weighted_sum"].as_f64().unwrap()),
            "{name}: weighted sum {wsum}"
        );
        let cols = *shape.last().unwrap();
        for (r, row) in t["rows"].as_object().unwrap() {
            let r: usize = r.parse().unwrap();
            for (j, want) in row.as_array().unwrap().iter().enumerate() {
                let want = want.as_f64().unwrap() as f32;
                assert_eq!(
                    v[r * cols + j].to_bits(),
                    want.to_bits(),
                    "{name}[{r}][{j}]"
                );
            }
        }
    }
}

/// The BPE parts of the tokenizer section are checked strictly: a merge index out of order,
/// an unknown pre-tokenizer code, an added token out of range.
#[test]
fn packed_bpe_section_is_checked() {
    use topkit::format::{BPE_PRE_DIGITS_GPT2, TOKENIZER_HEADER_BYTES};
    let tiny = tiny();
    let (dir, src) = write_tmp(&tiny.bytes);
    let out = pack(&src, &dir.path().join("m.tkm"), &["--dtype", "f32"]);
    let good = std::fs::read(out).unwrap();
    let aligned = read(&dir.path().join("m.tkm"));
    let model = PackedModel::parse(aligned.as_slice()).unwrap();
    let m = model.tokenizer();
    assert_eq!(m.pre_tokenizer(), BPE_PRE_DIGITS_GPT2);
    // The three control tokens (ggml token type 3) are the added tokens.
    assert_eq!(m.n_added(), 3);
    assert_eq!(
        (0..3).map(|i| m.added(i).unwrap()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for r in 0..m.n_merges() as u32 {
        let (a, b) = m.merge(r as usize).unwrap();
        assert_eq!(m.merge_rank(a, b), Some(r));
    }
    assert_eq!(m.merge_rank(0, 0), None);
    let tok_at = u64::from_le_bytes(good[48..56].try_into().unwrap()) as usize;
    let n = tiny_tokens().len();
    let index_at = tok_at + TOKENIZER_HEADER_BYTES + 4 * (n + 1) + 4 * n + 8 * m.n_merges();
    let parse = |b: &mut Vec<u8>| {
        topkit_cli::writer::reseal(b);
        let a = topkit_cli::writer::AlignedBytes::new(b.clone());
        PackedModel::parse(a.as_slice()).map(|_| ())
    };
    let mut b = good.clone();
    assert!(parse(&mut b).is_ok());
    // Swap the first two entries of the merge index.
    let mut b = good.clone();
    let (x, y) = (index_at, index_at + 4);
    let first: [u8; 4] = b[x..x + 4].try_into().unwrap();
    b.copy_within(y..y + 4, x);
    b[y..y + 4].copy_from_slice(&first);
    assert!(matches!(parse(&mut b), Err(topkit::Error::Malformed(_))));
    // A rank out of range.
    let mut b = good.clone();
    b[x..x + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(parse(&mut b), Err(topkit::Error::Malformed(_))));
    // Pre-tokenizer code 7 (word 13 of the header).
    let mut b = good.clone();
    let pre_at = tok_at + 4 * 13;
    b[pre_at..pre_at + 4].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(
        parse(&mut b),
        Err(topkit::Error::UnknownCode { .. })
    ));
    // An added-token count the section has no room for.
    let mut b = good;
    b[pre_at + 4..pre_at + 8].copy_from_slice(&1u32.to_le_bytes());
    assert!(parse(&mut b).is_err());
}

/// The tiny file with metadata `key` replaced by `value` (or added when absent).
fn tiny_with(key: &'static str, value: Kv, extra: Vec<T>) -> Vec<u8> {
    let t = tiny();
    let g = Gguf::parse(&t.bytes).unwrap();
    let mut kv: Vec<(&str, Kv)> =
        g.kv.iter()
            .filter(|(k, _)| k != key)
            .map(|(k, v)| {
                let k: &'static str = Box::leak(k.clone().into_boxed_str());
                let v = match v {
                    gguf::Value::U32(x) => Kv::U32(*x),
                    gguf::Value::F32(x) => Kv::F32(*x),
                    gguf::Value::Str(s) => Kv::Str(Box::leak(s.clone().into_boxed_str())),
                    gguf::Value::Array(a) if a.ty == 8 => Kv::Strs(
                        a.values()
                            .map(|v| v.unwrap().as_str().unwrap().to_owned())
                            .collect(),
                    ),
                    gguf::Value::Array(a) => Kv::I32s(
                        a.values()
                            .map(|v| match v.unwrap() {
                                gguf::Value::I32(x) => x,
                                other => panic!("{other:?}"),
                            })
                            .collect(),
                    ),
                    other => panic!("{other:?}"),
                };
                (k, v)
            })
            .collect();
    kv.push((key, value));
    let mut tensors: Vec<T> = g
        .tensors
        .iter()
        .map(|ti| T {
            name: ti.name.clone(),
            dims: ti.dims.clone(),
            ty: ti.ty,
            data: g.data(&t.bytes, ti).unwrap().to_vec(),
        })
        .collect();
    tensors.extend(extra);
    write_gguf(&kv, &tensors)
}

/// Fields the core would refuse (or run as nonsense) only later are refused by `pack`, naming
/// the field and the file.
#[test]
fn nonsense_metadata_is_refused_at_pack() {
    for (key, value, needle) in [
        ("llama.rope.freq_base", Kv::F32(0.0), "llama.rope.freq_base"),
        ("llama.rope.freq_base", Kv::F32(-1.0), "positive"),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Kv::F32(f32::NAN),
            "layer_norm_rms_epsilon",
        ),
        (
            "llama.rope.dimension_count",
            Kv::Str("32"),
            "llama.rope.dimension_count",
        ),
        (
            "tokenizer.ggml.merges",
            Kv::Strs(vec!["a b".into(), "c e".into()]),
            "which is not a token",
        ),
    ] {
        let bytes = tiny_with(key, value, Vec::new());
        rejects(&bytes, needle);
        let (dir, p) = write_tmp(&bytes);
        topkit(&["pack", s(&p), "-o", s(&dir.path().join("o.tkm"))])
            .assert_error(&format!("{}: ", p.display()));
        topkit(&["pack", s(&p), "-o", s(&dir.path().join("o.tkm"))]).assert_error(needle);
    }
}

/// 20,000 layers (and as many extra tensors): refused at once, before any tensor is read.
#[test]
fn too_many_layers_are_refused_at_once() {
    let extra = (0..20_000)
        .map(|i| T {
            name: format!("extra.{i}"),
            dims: vec![1],
            ty: 0,
            data: f32_bytes(&[1.0]),
        })
        .collect();
    let bytes = tiny_with("llama.block_count", Kv::U32(20_000), extra);
    let start = std::time::Instant::now();
    rejects(&bytes, "20000 layers");
    let (dir, p) = write_tmp(&bytes);
    topkit(&["pack", s(&p), "-o", s(&dir.path().join("o.tkm"))])
        .assert_error("20000 layers, more than the 48");
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

/// A large metadata array is kept as its bytes (not an enum per element) and decoded on
/// demand; the tiny file with 4 MiB of u8 metadata still packs.
#[test]
fn metadata_arrays_cost_their_size() {
    let mut bytes = tiny().bytes;
    // The key/value goes right after the header (magic, version, counts); a length of 32 *
    // k bytes keeps the data section where its offsets point. Key: 8 + 9 bytes, type 4,
    // element type 4, count 8, then the elements.
    let n = (4usize << 20) + 31;
    let mut kvs = Vec::new();
    kvs.extend_from_slice(&("big.array".len() as u64).to_le_bytes());
    kvs.extend_from_slice(b"big.array");
    kvs.extend_from_slice(&9u32.to_le_bytes());
    kvs.extend_from_slice(&array(0, (0..n).map(|i| vec![i as u8])));
    assert_eq!(kvs.len() % 32, 0);
    let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) + 1;
    bytes[16..24].copy_from_slice(&count.to_le_bytes());
    let mut file = bytes[..24].to_vec();
    file.extend_from_slice(&kvs);
    file.extend_from_slice(&bytes[24..]);
    let g = Gguf::parse(&file).unwrap();
    match g.get("big.array") {
        Some(gguf::Value::Array(a)) => {
            assert_eq!(a.len(), n);
            assert_eq!(a.values().nth(300).unwrap().unwrap(), gguf::Value::U8(44));
        }
        other => panic!("{other:?}"),
    }
    let (dir, p) = write_tmp(&file);
    pack(&p, &dir.path().join("o.tkm"), &[]);
}
