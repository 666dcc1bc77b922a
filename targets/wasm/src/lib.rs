//! topkit in the browser: a thin `wasm-bindgen` layer over the core, with no inference logic of
//! its own. A [`Model`] holds one packed `.tkm` file (copied once into 16-byte aligned memory,
//! as the core's parser requires); [`Model::embed`] tokenizes with the file's WordPiece
//! vocabulary and runs the core's encoder in one arena of exactly the plan's peak bytes;
//! [`Model::plan`] returns that memory plan. Every core error becomes a JS `Error` carrying the
//! core's message.
#![forbid(unsafe_code)]

use bytemuck::{Pod, Zeroable};
use js_sys::{Array, Float32Array, Object, Reflect};
use topkit::encoder::{Encoder, layers};
use topkit::format::{PackedModel, ParseOptions, TokenizerKind};
use topkit::kernels::Kernels;
use topkit::tokenizer::WordPiece;
use topkit::{ArenaBuf, Plan, RunConfig};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Options of `embed` and `plan`. Omitted: dense attention and feed-forward, chunk 16, the
 *  fast kernels. */
export interface EmbedOptions {
  /** Keys kept per query (top-k attention); omitted or null: dense. */
  k_attn?: number | null;
  /** Hidden units kept per token in the feed-forward layers; omitted or null: dense. */
  k_ff?: number | null;
  /** Tokens processed together (default 16). */
  chunk?: number;
  /** Cut texts longer than the model's max_seq, as the reference tokenizer does (default
   *  false: such a text is an error). */
  truncate?: boolean;
  /** "fast" (default): int8 activations for int8 weights (exact i32 block sums) and the
   *  simd128 kernels; "reference": the generic kernels with f32 activations, the bits of the
   *  host's `topkit embed --kernels reference` and of the firmware. */
  kernels?: "fast" | "reference";
}

/** One working buffer of the plan. */
export interface PlanBuffer {
  name: string;
  /** Size, bytes (padded to 16). */
  bytes: number;
  /** Start, bytes from the start of the arena. */
  offset: number;
  /** When it is live: Persistent, KvProjection, Attention or FeedForward. */
  phase: string;
}

/** The memory plan of a run: every buffer, and the arena size to provide. */
export interface MemoryPlan {
  /** Tokens the buffers are sized for. */
  seq_len: number;
  /** Tokens processed together. */
  chunk: number;
  /** Arena bytes in use at once, at most: the size of the one allocation embed makes. */
  peak_bytes: number;
  /** Bytes of the n_heads x N x N score matrix of vanilla attention (for comparison). */
  vanilla_scores_bytes: number;
  buffers: PlanBuffer[];
}
"#;

#[wasm_bindgen]
extern "C" {
    /// Options object (see the TypeScript interface `EmbedOptions`).
    #[wasm_bindgen(typescript_type = "EmbedOptions")]
    pub type EmbedOptions;
    /// Plan object (see the TypeScript interface `MemoryPlan`).
    #[wasm_bindgen(typescript_type = "MemoryPlan")]
    pub type MemoryPlan;
}

/// 16 bytes with the arena's (and the parser's) alignment: storage of aligned byte buffers
/// without unsafe code.
#[repr(C, align(16))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Block([u8; 16]);

/// A zeroed, 16-byte aligned buffer of `len` bytes (one allocation of `len` rounded up to 16).
fn aligned(len: usize) -> Vec<Block> {
    vec![Block([0; 16]); len.div_ceil(16)]
}

fn core_err(e: topkit::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A packed sentence encoder (`.tkm` file with a WordPiece tokenizer), held in wasm memory.
#[wasm_bindgen]
pub struct Model {
    blocks: Vec<Block>,
    len: usize,
    max_seq: usize,
    d_model: usize,
}

/// Options read from the JS object.
struct Opts {
    k_attn: Option<usize>,
    k_ff: Option<usize>,
    chunk: usize,
    truncate: bool,
    kernels: Kernels,
}

fn get(obj: &JsValue, key: &str) -> Result<JsValue, JsError> {
    Reflect::get(obj, &JsValue::from_str(key))
        .map_err(|_| JsError::new(&format!("cannot read option {key}")))
}

fn opt_count(obj: &JsValue, key: &str) -> Result<Option<usize>, JsError> {
    let v = get(obj, key)?;
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 => Ok(Some(x as usize)),
        _ => Err(JsError::new(&format!(
            "option {key} must be a non-negative integer or null"
        ))),
    }
}

impl Opts {
    fn read(options: Option<EmbedOptions>) -> Result<Self, JsError> {
        let mut o = Opts {
            k_attn: None,
            k_ff: None,
            chunk: 16,
            truncate: false,
            kernels: Kernels::Fast,
        };
        let Some(v) = options.map(JsValue::from) else {
            return Ok(o);
        };
        if v.is_undefined() || v.is_null() {
            return Ok(o);
        }
        if !v.is_object() {
            return Err(JsError::new("options must be an object"));
        }
        o.k_attn = opt_count(&v, "k_attn")?;
        o.k_ff = opt_count(&v, "k_ff")?;
        if let Some(c) = opt_count(&v, "chunk")? {
            o.chunk = c;
        }
        let t = get(&v, "truncate")?;
        o.truncate = t.as_bool().unwrap_or(false);
        let k = get(&v, "kernels")?;
        if !(k.is_undefined() || k.is_null()) {
            o.kernels = match k.as_string().as_deref() {
                Some("fast") => Kernels::Fast,
                Some("reference") => Kernels::Reference,
                _ => {
                    return Err(JsError::new(
                        "option kernels must be \"fast\" or \"reference\"",
                    ));
                }
            };
        }
        Ok(o)
    }

    fn run(&self, seq_len: usize) -> RunConfig {
        RunConfig {
            seq_len,
            chunk: self.chunk,
            k_attn: self.k_attn,
            k_ff: self.k_ff,
        }
    }
}

impl Model {
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }

    /// Views the file again and calls `f` with the encoder (run by `kernels`) and the
    /// tokenizer: the views borrow `self`, so they are not kept between calls. The file
    /// passed every check in [`Model::new`] and never changes, so it is viewed with
    /// [`PackedModel::parse_again`]: no copy, no CRC, none of the checks that cost
    /// O(vocabulary) (those took about 1 ms per call).
    fn with<R>(
        &self,
        kernels: Kernels,
        f: impl FnOnce(
            &Encoder<'_>,
            &WordPiece<'_, topkit::format::VocabView<'_>>,
        ) -> Result<R, JsError>,
    ) -> Result<R, JsError> {
        let pm = PackedModel::parse_again(self.bytes()).map_err(core_err)?;
        let layers = layers(&pm).map_err(core_err)?;
        let encoder = Encoder::from_packed(&pm, &layers)
            .map_err(core_err)?
            .with_kernels(kernels);
        let tok = pm.tokenizer();
        let wp = WordPiece::from_view(tok).map_err(core_err)?;
        f(&encoder, &wp)
    }

    fn plan_for(encoder: &Encoder<'_>, run: &RunConfig) -> Result<Plan, JsError> {
        encoder.model().plan(run).map_err(core_err)
    }
}

#[wasm_bindgen]
impl Model {
    /// Loads a packed model from the bytes of a `.tkm` file (copied once into aligned wasm
    /// memory; the CRC is checked). Throws an `Error` with the core's message when the bytes
    /// are not a sentence encoder with a WordPiece tokenizer.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<Model, JsError> {
        let mut blocks = aligned(bytes.len());
        bytemuck::cast_slice_mut::<Block, u8>(&mut blocks)[..bytes.len()].copy_from_slice(bytes);
        let mut m = Model {
            blocks,
            len: bytes.len(),
            max_seq: 0,
            d_model: 0,
        };
        let pm = PackedModel::parse_with(m.bytes(), ParseOptions { verify_crc: true })
            .map_err(core_err)?;
        if pm.tokenizer().kind() != TokenizerKind::WordPiece {
            return Err(JsError::new(&format!(
                "the file's tokenizer is {:?}; embed needs a WordPiece tokenizer",
                pm.tokenizer().kind()
            )));
        }
        let (max_seq, d_model) = (pm.config().max_seq, pm.config().d_model);
        m.max_seq = max_seq;
        m.d_model = d_model;
        // Fails here, not at the first embed, when the file is no sentence encoder.
        m.with(Kernels::Reference, |_, _| Ok(()))?;
        Ok(m)
    }

    /// Longest input, tokens (`[CLS]` and `[SEP]` included).
    #[wasm_bindgen(getter)]
    pub fn max_seq(&self) -> usize {
        self.max_seq
    }

    /// Length of an embedding, elements (f32).
    #[wasm_bindgen(getter)]
    pub fn dim(&self) -> usize {
        self.d_model
    }

    /// Size of the packed file held, bytes.
    #[wasm_bindgen(getter)]
    pub fn file_bytes(&self) -> usize {
        self.len
    }

    /// Number of tokens of `text` (`[CLS]` and `[SEP]` included), before any truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize, JsError> {
        self.with(Kernels::Reference, |_, wp| {
            let mut ids = vec![0u32; 2 * text.len() + 2];
            Ok(wp.encode(text, &mut ids).map_err(core_err)?.len)
        })
    }

    /// The memory plan of a run over `seq` tokens with `options`: every working buffer and
    /// the peak, bytes.
    pub fn plan(&self, seq: usize, options: Option<EmbedOptions>) -> Result<MemoryPlan, JsError> {
        let o = Opts::read(options)?;
        let plan = self.with(o.kernels, |enc, _| Self::plan_for(enc, &o.run(seq)))?;
        let obj = Object::new();
        let set = |o: &Object, k: &str, v: JsValue| {
            Reflect::set(o, &JsValue::from_str(k), &v)
                .map(|_| ())
                .map_err(|_| JsError::new("cannot build the plan object"))
        };
        set(&obj, "seq_len", (plan.seq_len as f64).into())?;
        set(&obj, "chunk", (plan.chunk as f64).into())?;
        set(&obj, "peak_bytes", (plan.peak_bytes as f64).into())?;
        set(
            &obj,
            "vanilla_scores_bytes",
            (plan.vanilla_scores_bytes as f64).into(),
        )?;
        let bufs = Array::new();
        for b in plan.buffers() {
            let bo = Object::new();
            set(&bo, "name", JsValue::from_str(b.name))?;
            set(&bo, "bytes", (b.bytes as f64).into())?;
            set(&bo, "offset", (b.offset as f64).into())?;
            set(&bo, "phase", JsValue::from_str(&format!("{:?}", b.phase)))?;
            bufs.push(&bo);
        }
        set(&obj, "buffers", bufs.into())?;
        Ok(JsValue::from(obj).unchecked_into())
    }

    /// Sentence embeddings of `texts` (one `Float32Array` of `dim` values each), computed in
    /// one arena of exactly the plan's peak bytes for max_seq tokens. Throws an `Error` with
    /// the core's message on a bad option or a text longer than max_seq (unless `truncate`).
    pub fn embed(
        &self,
        texts: Vec<String>,
        options: Option<EmbedOptions>,
    ) -> Result<Vec<Float32Array>, JsError> {
        let o = Opts::read(options)?;
        self.with(o.kernels, |enc, wp| {
            let run = o.run(self.max_seq);
            let plan = Self::plan_for(enc, &run)?;
            let mut mem = ArenaBuf::for_plan(&plan);
            let mut out = Vec::with_capacity(texts.len());
            for text in &texts {
                // Every token but [CLS]/[SEP] comes from at least one byte of the text (x2 for
                // normalisation growing a character), so this never truncates.
                let cap = if o.truncate {
                    self.max_seq
                } else {
                    2 * text.len() + 2
                };
                let mut ids = vec![0u32; cap];
                let n = wp.encode(text, &mut ids).map_err(core_err)?.len;
                let mut arena = mem.arena();
                let mut e = vec![0f32; self.d_model];
                // A text over max_seq reaches the core, which rejects it with its own message.
                enc.embed(&run, &ids[..n], &mut arena, &mut e)
                    .map_err(core_err)?;
                out.push(Float32Array::from(e.as_slice()));
            }
            Ok(out)
        })
    }
}
