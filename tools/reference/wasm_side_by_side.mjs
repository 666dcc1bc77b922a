// topkit's wasm package side by side with onnxruntime-web in node (optional, not in CI).
//
// all-MiniLM-L6-v2, one text of exactly 32, 128 and 256 tokens (the texts of
// benches/src/speed.rs), tokenization included, one thread, in ONE run: every engine embeds
// the same text in turn (round-robin), medians and ratios at the end, with the cosine of each
// embedding to the sentence-transformers (f32) reference. Both engines run on node's main
// thread, so each call is timed twice: wall clock (performance.now) and the process's CPU
// time (process.cpuUsage, user + system). On a shared, loaded machine the CPU time is the
// steadier of the two (the wall clock also counts the time other processes hold the core).
//
// Engines:
// - topkit wasm (simd128 build, the int8 .tkm file): fast kernels dense and top-k (k_attn 32),
//   reference kernels dense;
// - onnxruntime-web (wasm backend, SIMD, numThreads = 1) on the fp32 ONNX export and on its
//   dynamically quantized int8 version (per-channel weights), both made by
//   tools/reference/onnx_side_by_side.py --export-only; tokenization by
//   @huggingface/tokenizers (pure JS WordPiece from the model's tokenizer.json), mean pooling
//   and L2 normalisation in JS (all inside the timing, as for topkit).
//
// Setup (once):
//   cargo xtask test-wasm     # builds $CARGO_TARGET_DIR/wasm/pkg-node (simd128)
//   ~/.cache/topkit/venv-ref/bin/python tools/reference/onnx_side_by_side.py --export-only
// Run:
//   node tools/reference/wasm_side_by_side.mjs [--iters 15] [--seqs 32,128,256]
// The npm packages (pinned below) are installed into ~/.cache/topkit/npm-ref on first use,
// never into the repository.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, loadavg, cpus } from 'node:os';
import { join, resolve } from 'node:path';

const ORT_WEB = '1.30.0';
const HF_TOKENIZERS = '0.2.0';

const root = resolve(import.meta.dirname, '..', '..');
const cache = process.env.TOPKIT_CACHE ?? join(homedir(), '.cache/topkit');
const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target');
const wasmOut = process.env.TOPKIT_WASM_OUT ?? join(targetDir, 'wasm');
const modelDir = join(cache, 'models/all-MiniLM-L6-v2');
const tkm = join(cache, 'models/all-MiniLM-L6-v2-int8.tkm');
const onnxDir = join(cache, 'onnx');
const npmDir = join(cache, 'npm-ref');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const iters = Number(arg('iters', '15'));
const seqs = arg('seqs', '32,128,256').split(',').map(Number);

for (const [path, how] of [
  [join(wasmOut, 'pkg-node/topkit_wasm.js'), 'cargo xtask test-wasm'],
  [tkm, 'cargo xtask fetch-model (and pack)'],
  [join(onnxDir, 'minilm-int8-per-channel.onnx'), 'onnx_side_by_side.py --export-only'],
  [join(onnxDir, 'reference-embeddings.json'), 'onnx_side_by_side.py --export-only'],
]) {
  if (!existsSync(path)) throw new Error(`missing ${path}: run ${how}`);
}

// The npm packages, pinned, in the cache (idempotent).
const have = (p, v) => {
  try {
    return JSON.parse(readFileSync(join(npmDir, 'node_modules', p, 'package.json'), 'utf8')).version === v;
  } catch {
    return false;
  }
};
if (!have('onnxruntime-web', ORT_WEB) || !have('@huggingface/tokenizers', HF_TOKENIZERS)) {
  mkdirSync(npmDir, { recursive: true });
  execFileSync('npm', ['install', '--prefix', npmDir, '--no-save', '--ignore-scripts', '--no-audit', '--no-fund',
    `onnxruntime-web@${ORT_WEB}`, `@huggingface/tokenizers@${HF_TOKENIZERS}`], { stdio: 'inherit' });
}
const requireNpm = createRequire(join(npmDir, 'node_modules', '.keep'));
const ort = requireNpm('onnxruntime-web');
const { Tokenizer } = requireNpm('@huggingface/tokenizers');
ort.env.wasm.numThreads = 1;
ort.env.wasm.simd = true;

const { Model } = createRequire(import.meta.url)(join(wasmOut, 'pkg-node/topkit_wasm.js'));
const wasmBytes = readFileSync(join(wasmOut, 'pkg-node/topkit_wasm_bg.wasm')).length;

// The texts of benches/src/speed.rs: one WordPiece token per word.
const WORDS = ('the quick brown fox jumps over the lazy dog while a small bird sings in the ' +
  'old tree near the river and people walk along the road to the market every morning').split(' ');
const textOf = (n) => Array.from({ length: Math.max(n - 2, 0) }, (_, i) => WORDS[i % WORDS.length]).join(' ');

const reference = JSON.parse(readFileSync(join(onnxDir, 'reference-embeddings.json'), 'utf8'));
const cosine = (a, b) => {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
};
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };

// topkit: tokenization, encoder, pooling and normalisation are all inside `embed`.
const model = new Model(new Uint8Array(readFileSync(tkm)));
const topkit = (opts) => async (text) => model.embed([text], opts)[0];

// onnxruntime-web: JS WordPiece, the session, mean pooling over the mask, L2 normalisation.
const tok = new Tokenizer(
  JSON.parse(readFileSync(join(modelDir, 'tokenizer.json'), 'utf8')),
  JSON.parse(readFileSync(join(modelDir, 'tokenizer_config.json'), 'utf8')),
);
async function onnx(file) {
  const session = await ort.InferenceSession.create(join(onnxDir, file), {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
  return async (text) => {
    const ids = tok.encode(text).ids;
    const n = ids.length;
    const t = (data) => new ort.Tensor('int64', data, [1, n]);
    const out = await session.run({
      input_ids: t(BigInt64Array.from(ids, BigInt)),
      attention_mask: t(new BigInt64Array(n).fill(1n)),
      token_type_ids: t(new BigInt64Array(n)),
    });
    const h = out.last_hidden_state.data;
    const d = h.length / n;
    const e = new Float32Array(d);
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) e[j] += h[i * d + j];
    let norm = 0;
    for (let j = 0; j < d; j++) { e[j] /= n; norm += e[j] * e[j]; }
    norm = Math.sqrt(norm) || 1;
    for (let j = 0; j < d; j++) e[j] /= norm;
    return e;
  };
}

const engines = [
  ['topkit wasm int8, fast kernels, dense', topkit({ kernels: 'fast' })],
  ['topkit wasm int8, fast kernels, top-k (k_attn 32)', topkit({ kernels: 'fast', k_attn: 32 })],
  ['topkit wasm int8, reference kernels, dense', topkit({ kernels: 'reference' })],
  ['onnxruntime-web fp32', await onnx('minilm-fp32.onnx')],
  ['onnxruntime-web int8 (dynamic, per-channel)', await onnx('minilm-int8-per-channel.onnx')],
];
const ORT_INT8 = engines.length - 1;

const load0 = loadavg()[0];
const rows = [];
for (const n of seqs) {
  const text = textOf(n);
  if (model.count_tokens(text) !== n || tok.encode(text).ids.length !== n) throw new Error(`text of ${n} tokens`);
  const ref = reference[String(n)];
  if (!ref) throw new Error(`no reference embedding for ${n} tokens: rerun --export-only --seqs`);
  const cos = [];
  for (const [, f] of engines) {
    cos.push(cosine(await f(text), ref)); // also the warm-up
    await f(text);
  }
  const ms = engines.map(() => []);
  const cpu = engines.map(() => []);
  for (let it = 0; it < iters; it++) {
    for (let e = 0; e < engines.length; e++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await engines[e][1](text);
      ms[e].push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[e].push((c.user + c.system) / 1000);
    }
  }
  const med = ms.map(median);
  const medCpu = cpu.map(median);
  engines.forEach(([name], e) => rows.push({
    n, name, ms: med[e], ratio: med[ORT_INT8] / med[e], cpu: medCpu[e], cpuRatio: medCpu[ORT_INT8] / medCpu[e], cos: cos[e],
  }));
}
const load1 = loadavg()[0];

console.log(`node ${process.version}, ${cpus()[0].model}, ${new Date().toISOString().slice(0, 10)}; ` +
  `one thread, tokenization included, ${iters} timed runs each, round-robin, medians; ` +
  `load average (1 min) ${load0.toFixed(2)} at start, ${load1.toFixed(2)} at end`);
console.log(`topkit_wasm_bg.wasm (simd128): ${wasmBytes} bytes; onnxruntime-web ${ORT_WEB}`);
console.log('| tokens | engine | wall ms | ort-web int8 / this | CPU ms | ort-web int8 / this (CPU) | cosine to sentence-transformers |');
console.log('|---:|---|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.n} | ${r.name} | ${r.ms.toFixed(1)} | ${r.ratio.toFixed(2)} | ${r.cpu.toFixed(1)} | ${r.cpuRatio.toFixed(2)} | ${r.cos.toFixed(6)} |`);
}
model.free();
