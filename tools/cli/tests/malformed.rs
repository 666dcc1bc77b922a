//! A corpus of malformed packed files and model directories, built from a valid tiny model:
//! each must give its specific typed error from the core and exit code 2 with a message naming
//! the problem from the CLI, never a panic. The corpus files are written to a temporary folder
//! (set `TOPKIT_KEEP_CORPUS=<dir>` to keep them, e.g. as fuzzing seeds).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use topkit::Error;
use topkit::format::{
    self, CRC_OFFSET, FileConfig, Header, PackedModel, Pooling, TENSOR_ENTRY_BYTES, TensorEntry,
    TensorName,
};
use topkit_cli::writer::{self, AlignedBytes, Tensor, TensorData, Tokenizer};

/// A valid packed tiny BERT (int8, so there are scales too).
fn valid() -> Vec<u8> {
    let tmp = tiny_dir();
    let out = pack(
        &tmp.path().join("model"),
        &tmp.path().join("m.tkm"),
        &["--dtype", "int8"],
    );
    std::fs::read(out).unwrap()
}

fn corpus_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("TOPKIT_KEEP_CORPUS") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (None, PathBuf::from(d))
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

fn parse(bytes: &[u8]) -> Result<(), Error> {
    let a = AlignedBytes::new(bytes.to_vec());
    PackedModel::parse(a.as_slice()).map(|_| ())
}

/// Writes `bytes` as `<dir>/<name>.tkm`, checks the core's error and the CLI's exit code and
/// message for `inspect` and `budget`.
fn expect(dir: &Path, name: &str, bytes: &[u8], want: Error, message: &str) {
    assert_eq!(parse(bytes), Err(want), "{name}");
    let path = dir.join(format!("{name}.tkm"));
    std::fs::write(&path, bytes).unwrap();
    for args in [
        vec!["inspect", s(&path)],
        vec!["budget", s(&path), "--seq", "4"],
    ] {
        let o = topkit(&args);
        assert_eq!(o.code, 2, "{name}: {args:?}: {}{}", o.stdout, o.stderr);
        assert!(o.stderr.starts_with("error: "), "{name}: {}", o.stderr);
        assert!(
            o.stderr.contains(message),
            "{name}: {message:?} not in {:?}",
            o.stderr
        );
        assert!(
            o.stderr.contains(&format!("{name}.tkm")),
            "{name}: the message names the file: {}",
            o.stderr
        );
    }
}

fn header(b: &[u8]) -> Header {
    Header::decode(b).unwrap()
}

/// Index and entry of tensor `name` in the table.
fn entry(b: &[u8], name: &str) -> (usize, TensorEntry) {
    let h = header(b);
    (0..h.tensors.len as usize)
        .map(|i| {
            let at = h.tensors.offset as usize + i * TENSOR_ENTRY_BYTES;
            (i, TensorEntry::decode(&b[at..at + TENSOR_ENTRY_BYTES]))
        })
        .find(|(_, e)| {
            let at = (h.names.offset + e.name_offset as u64) as usize;
            &b[at..at + e.name_len as usize] == name.as_bytes()
        })
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

fn set_entry(b: &mut [u8], index: usize, e: &TensorEntry) {
    let at = header(b).tensors.offset as usize + index * TENSOR_ENTRY_BYTES;
    b[at..at + TENSOR_ENTRY_BYTES].copy_from_slice(&e.encode());
    writer::reseal(b);
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    writer::reseal(b);
}

/// A copy of `b` with [`set_u32`] applied.
fn with_u32(b: &[u8], at: usize, v: u32) -> Vec<u8> {
    let mut m = b.to_vec();
    set_u32(&mut m, at, v);
    m
}

#[test]
fn the_valid_file_parses_also_with_padding_after_it() {
    let b = valid();
    assert_eq!(parse(&b), Ok(()));
    // A flash partition may be larger than the file.
    let mut padded = b.clone();
    padded.extend_from_slice(&[0xFF; 100]);
    assert_eq!(parse(&padded), Ok(()));
}

#[test]
fn header_corpus() {
    let (_keep, dir) = corpus_dir();
    let b = valid();
    let len = b.len();

    expect(
        &dir,
        "empty",
        &[],
        Error::Truncated {
            needed: 128,
            found: 0,
        },
        "truncated file: needs 128 bytes, has 0",
    );
    expect(
        &dir,
        "truncated_header",
        &b[..60],
        Error::Truncated {
            needed: 128,
            found: 60,
        },
        "truncated file",
    );
    expect(
        &dir,
        "truncated_half",
        &b[..len / 2],
        Error::Truncated {
            needed: len,
            found: len / 2,
        },
        &format!("truncated file: needs {len} bytes, has {} bytes", len / 2),
    );

    let mut m = b.clone();
    m[..8].copy_from_slice(b"GGUF\0\0\0\0");
    expect(
        &dir,
        "wrong_magic",
        &m,
        Error::BadMagic,
        "not a topkit model file",
    );

    let m = with_u32(&b, 8, 2);
    expect(
        &dir,
        "wrong_version",
        &m,
        Error::UnsupportedVersion {
            found: 2,
            supported: 1,
        },
        "unsupported format version 2 (this build reads version 1)",
    );

    // One weight byte changed: only the CRC can tell.
    let mut m = b.clone();
    let data_at = header(&b).data.offset as usize;
    m[data_at + 3] ^= 0x40;
    let stored = header(&b).crc;
    let computed = format::file_crc(&m);
    assert_ne!(stored, computed);
    expect(
        &dir,
        "crc_mismatch",
        &m,
        Error::ChecksumMismatch { stored, computed },
        &format!("CRC mismatch: file says {stored:#010x}, computed {computed:#010x}"),
    );
    // The CRC can be skipped for speed; the change is then invisible to the parser.
    let a = AlignedBytes::new(m);
    assert!(
        PackedModel::parse_with(a.as_slice(), format::ParseOptions { verify_crc: false }).is_ok()
    );
    let o = topkit(&["inspect", s(&dir.join("crc_mismatch.tkm")), "--no-verify"]);
    assert_eq!(o.code, 0, "{}", o.stderr);

    // The names section pushed past the end of the file.
    let mut m = b.clone();
    let names_len = header(&b).names.len;
    m[80..88].copy_from_slice(&(len as u64).to_le_bytes());
    writer::reseal(&mut m);
    expect(
        &dir,
        "section_out_of_bounds",
        &m,
        Error::OutOfBounds {
            what: "tensor names",
            offset: len,
            len: names_len as usize,
            size: len,
        },
        &format!(
            "tensor names out of bounds: {names_len} bytes at offset {len}, only {len} bytes available"
        ),
    );

    // A section offset that overflows when the length is added.
    let mut m = b.clone();
    m[96..104].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    writer::reseal(&mut m);
    assert!(matches!(
        parse(&m),
        Err(Error::OutOfBounds {
            what: "tensor data section",
            ..
        })
    ));

    let m = with_u32(&b, 28, 1);
    expect(
        &dir,
        "reserved_flags",
        &m,
        Error::Malformed("reserved header fields are not zero"),
        "malformed file",
    );

    // Config: an enum code that does not exist, and an invalid dimension.
    let cfg_at = header(&b).config.offset as usize;
    let m = with_u32(&b, cfg_at, 7);
    expect(
        &dir,
        "unknown_arch",
        &m,
        Error::UnknownCode {
            what: "arch",
            code: 7,
        },
        "unknown arch code 7",
    );
    let m = with_u32(&b, cfg_at + 4 * 4, 3); // n_heads 3 does not divide d_model 8
    assert!(
        matches!(parse(&m), Err(Error::InvalidConfig(_))),
        "{:?}",
        parse(&m)
    );

    // Tokenizer: bytes that are not UTF-8 in a token string.
    let mut m = b.clone();
    let tok = header(&b).tokenizer;
    let last = (tok.offset + tok.len - 1) as usize;
    m[last] = 0xFF;
    writer::reseal(&mut m);
    expect(
        &dir,
        "token_not_utf8",
        &m,
        Error::Malformed("token strings are not valid UTF-8"),
        "token strings are not valid UTF-8",
    );
}

#[test]
fn tensor_table_corpus() {
    let (_keep, dir) = corpus_dir();
    let b = valid();
    let len = b.len();

    let (i, e) = entry(&b, "l0.q.w");
    let mut m = b.clone();
    set_entry(
        &mut m,
        i,
        &TensorEntry {
            data_offset: len as u64 + 16,
            ..e
        },
    );
    expect(
        &dir,
        "tensor_offset_out_of_bounds",
        &m,
        Error::BadTensorEntry {
            index: i,
            problem: "bytes outside the file",
        },
        &format!("tensor table entry {i}: bytes outside the file (tensor \"l0.q.w\")"),
    );

    // Data inside the file but in the header: outside the data section.
    let mut m = b.clone();
    set_entry(
        &mut m,
        i,
        &TensorEntry {
            data_offset: 0,
            ..e
        },
    );
    assert_eq!(
        parse(&m),
        Err(Error::BadTensorEntry {
            index: i,
            problem: "bytes outside the data section"
        })
    );

    let mut m = b.clone();
    set_entry(
        &mut m,
        i,
        &TensorEntry {
            data_offset: e.data_offset + 4,
            ..e
        },
    );
    assert_eq!(
        parse(&m),
        Err(Error::BadTensorEntry {
            index: i,
            problem: "bytes not aligned to 16"
        })
    );

    // Shape one row larger than the bytes stored.
    let mut m = b.clone();
    let mut shape = e.shape;
    shape[0] += 1;
    set_entry(&mut m, i, &TensorEntry { shape, ..e });
    let (rows, cols) = (shape[0] as usize, shape[1] as usize);
    expect(
        &dir,
        "shape_length_mismatch",
        &m,
        Error::TensorSize {
            index: i,
            what: "data",
            expected: rows * cols,
            found: e.data_len as usize,
        },
        &format!(
            "data length is {} bytes, shape and dtype need {}",
            e.data_len,
            rows * cols
        ),
    );

    // Right data, wrong number of scales.
    let mut m = b.clone();
    set_entry(
        &mut m,
        i,
        &TensorEntry {
            scales_len: e.scales_len - 4,
            ..e
        },
    );
    assert_eq!(
        parse(&m),
        Err(Error::TensorSize {
            index: i,
            what: "scales",
            expected: e.scales_len as usize,
            found: e.scales_len as usize - 4
        })
    );

    let mut m = b.clone();
    set_entry(&mut m, i, &TensorEntry { dtype: 9, ..e });
    expect(
        &dir,
        "unknown_dtype",
        &m,
        Error::UnknownCode {
            what: "tensor dtype",
            code: 9,
        },
        "unknown tensor dtype code 9",
    );

    let mut m = b.clone();
    set_entry(
        &mut m,
        i,
        &TensorEntry {
            dtype: format::DTYPE_I4_GROUPED,
            ..e
        },
    );
    expect(
        &dir,
        "int4_not_yet",
        &m,
        Error::Unsupported("int4 grouped tensors"),
        "not supported yet: int4 grouped tensors",
    );

    let mut m = b.clone();
    set_entry(&mut m, i, &TensorEntry { rank: 5, ..e });
    assert_eq!(
        parse(&m),
        Err(Error::BadTensorEntry {
            index: i,
            problem: "rank must be 1..=4"
        })
    );

    let mut m = b.clone();
    set_entry(
        &mut m,
        i,
        &TensorEntry {
            name_len: 10_000,
            ..e
        },
    );
    assert_eq!(
        parse(&m),
        Err(Error::BadTensorEntry {
            index: i,
            problem: "name outside the names section"
        })
    );

    // Two entries with the same name.
    let (j, e2) = entry(&b, "l0.q.b");
    let mut m = b.clone();
    set_entry(
        &mut m,
        j,
        &TensorEntry {
            name_offset: e.name_offset,
            name_len: e.name_len,
            ..e2
        },
    );
    assert!(
        matches!(
            parse(&m),
            Err(Error::BadTensorEntry {
                problem: "names not sorted or not unique",
                ..
            })
        ),
        "{:?}",
        parse(&m)
    );
}

fn tiny_file(drop: &str, reshape: Option<(&str, Vec<usize>)>) -> Vec<u8> {
    // Built with the writer, not the packer, to make files the packer would refuse to write.
    let a = AlignedBytes::new(valid());
    let m = PackedModel::parse(a.as_slice()).unwrap();
    let tensors: Vec<Tensor> = m
        .tensors()
        .filter(|t| t.name != drop)
        .map(|t| {
            let values = topkit_cli::pack::dequantize(&t);
            let shape = match &reshape {
                Some((n, s)) if *n == t.name => s.clone(),
                _ => t.shape().to_vec(),
            };
            Tensor {
                name: t.name.to_string(),
                shape,
                data: TensorData::F32(values),
            }
        })
        .collect();
    let mut tok = Tokenizer::none();
    tok.kind = m.tokenizer().kind();
    tok.tokens = (0..m.tokenizer().vocab().len() as u32)
        .map(|i| m.tokenizer().vocab().token(i).unwrap().into())
        .collect();
    let cfg = FileConfig {
        model: *m.config(),
        pooling: Pooling::Mean,
        normalize: true,
    };
    writer::write_file(&cfg, &tok, &tensors).unwrap()
}

#[test]
fn model_level_corpus() {
    let (_keep, dir) = corpus_dir();
    assert_eq!(
        parse(&tiny_file("", None)),
        Ok(()),
        "the rebuilt file is valid"
    );
    expect(
        &dir,
        "missing_tensor",
        &tiny_file("l1.ffn.up.w", None),
        Error::MissingTensor(TensorName::layer(1, "ffn.up.w")),
        "missing tensor l1.ffn.up.w",
    );
    expect(
        &dir,
        "missing_bias",
        &tiny_file("emb_norm.b", None),
        Error::MissingTensor(TensorName::global("emb_norm.b")),
        "missing tensor emb_norm.b",
    );
    // Same number of elements, transposed: the shape check catches it.
    expect(
        &dir,
        "wrong_tensor_shape",
        &tiny_file("", Some(("l0.ffn.down_t.w", vec![D, FF]))),
        Error::TensorShape {
            tensor: TensorName::layer(0, "ffn.down_t.w"),
            what: "rows",
            expected: FF,
            found: D,
        },
        "tensor l0.ffn.down_t.w: rows is 8, the configuration needs 16",
    );
}

#[test]
fn misaligned_buffer_is_refused() {
    let b = valid();
    let mut v = vec![0u8; b.len() + 32];
    let start = v.as_ptr().align_offset(16) + 1;
    v[start..start + b.len()].copy_from_slice(&b);
    assert_eq!(
        PackedModel::parse(&v[start..start + b.len()]).err(),
        Some(Error::Misaligned {
            what: "model buffer",
            align: 16
        })
    );
    assert_eq!(
        Error::Misaligned {
            what: "model buffer",
            align: 16
        }
        .to_string(),
        "model buffer is not aligned to 16 bytes"
    );
}

/// Every truncation and every single-byte change of the header and tables (resealed, so the
/// CRC does not hide it) is an error or a valid file: never a panic.
#[test]
fn no_truncation_or_byte_flip_panics() {
    let b = valid();
    let a = AlignedBytes::new(b.clone());
    let full = a.as_slice();
    for n in 0..b.len() {
        assert!(
            PackedModel::parse(&full[..n]).is_err(),
            "truncated to {n} bytes must fail"
        );
    }
    let data_at = header(&b).data.offset as usize;
    let mut m = b.clone();
    for i in (0..data_at).filter(|&i| !(CRC_OFFSET..CRC_OFFSET + 4).contains(&i)) {
        for x in [0x01u8, 0x80, 0xFF] {
            m[i] ^= x;
            writer::reseal(&mut m);
            let a = AlignedBytes::new(m.clone());
            // Whatever parses must be safe to use, also without the tokenizer's checks.
            for p in [
                PackedModel::parse(a.as_slice()),
                PackedModel::parse_again(a.as_slice()),
            ]
            .into_iter()
            .flatten()
            {
                for t in p.tensors() {
                    let _ = t.view();
                }
                let v = p.tokenizer().vocab();
                for id in 0..v.len() as u32 + 2 {
                    let _ = v.find(v.token(id).unwrap_or(""));
                    let _ = v.sorted_id(id as usize);
                }
            }
            m[i] ^= x;
        }
    }
}

/// `parse_again` views a file `parse` accepted the same way: the same tensors and the same
/// tokenizer lookups.
#[test]
fn parse_again_views_an_accepted_file_alike() {
    let a = AlignedBytes::new(valid());
    let (p, q) = (
        PackedModel::parse(a.as_slice()).unwrap(),
        PackedModel::parse_again(a.as_slice()).unwrap(),
    );
    assert_eq!(p.tensor_count(), q.tensor_count());
    for (t, u) in p.tensors().zip(q.tensors()) {
        assert_eq!(
            (t.name, t.shape(), t.bytes()),
            (u.name, u.shape(), u.bytes())
        );
    }
    let (v, w) = (p.tokenizer().vocab(), q.tokenizer().vocab());
    assert_eq!(v.len(), w.len());
    for id in 0..v.len() as u32 {
        let tok = v.token(id).unwrap();
        assert_eq!(w.token(id), Some(tok));
        assert_eq!(w.find(tok), Some(id));
    }
}

#[test]
fn bad_model_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.tkm");

    let gpt = tmp.path().join("gpt");
    write_hf_dir(&gpt, "gpt2", &tiny_tensors());
    let o = topkit(&["pack", s(&gpt), "-o", s(&out)]);
    o.assert_error("unsupported model_type \"gpt2\"");
    assert!(
        o.stderr.contains("supported model types are bert"),
        "{}",
        o.stderr
    );

    let holes = tmp.path().join("holes");
    let mut t = tiny_tensors();
    t.remove("encoder.layer.1.attention.self.key.weight");
    write_hf_dir(&holes, "bert", &t);
    let o = topkit(&["pack", s(&holes), "-o", s(&out)]);
    o.assert_error(
        "missing tensor \"encoder.layer.1.attention.self.key.weight\" (topkit name l1.k.w)",
    );

    // A weight whose shape disagrees with config.json.
    let bent = tmp.path().join("bent");
    let mut t = tiny_tensors();
    t.insert(
        "encoder.layer.0.intermediate.dense.weight".into(),
        (vec![FF - 1, D], vec![0.5; (FF - 1) * D]),
    );
    write_hf_dir(&bent, "bert", &t);
    let o = topkit(&["pack", s(&bent), "-o", s(&out)]);
    o.assert_error("tensor l0.ffn.up.w: rows is 15, the configuration needs 16");

    let o = topkit(&["pack", s(&tmp.path().join("nowhere")), "-o", s(&out)]);
    o.assert_error("has no config.json");

    let o = topkit(&[
        "pack",
        s(&tiny_dir().path().join("model")),
        "-o",
        s(&out),
        "--max-seq",
        "17",
    ]);
    o.assert_error("--max-seq 17 must be in 1..=16");

    let o = topkit(&["inspect", s(&tmp.path().join("missing.tkm"))]);
    o.assert_error("cannot read");

    assert!(!out.exists(), "no output file is written on errors");
}
