// The JS API of the nodejs package against the host's `topkit embed` (same model, same texts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import {
  OUT, MODEL, texts, hostRef, ABS_TOL, COS_TOL, FAST_ABS_TOL, FAST_COS_TOL, TOPK_FF_FAST_ABS_TOL,
  TOPK_FF_FAST_COS_TOL, FAST_TO_REFERENCE_COS, maxAbsDiff, cosine,
} from './common.mjs';

const require = createRequire(import.meta.url);
const { Model } = require(join(OUT, 'pkg-node', 'topkit_wasm.js'));
const bytes = new Uint8Array(readFileSync(MODEL));
const model = new Model(bytes);

const REF = { kernels: 'reference' };

function checkAgainst(name, out, absTol = ABS_TOL, cosTol = COS_TOL) {
  const ref = hostRef[name].embeddings;
  assert.equal(out.length, ref.length);
  for (let i = 0; i < out.length; i++) {
    assert.ok(out[i] instanceof Float32Array);
    assert.equal(out[i].length, model.dim);
    const d = maxAbsDiff(out[i], ref[i]);
    const c = cosine(out[i], ref[i]);
    assert.ok(d <= absTol, `${name} text ${i + 1}: max |wasm - host| = ${d} > ${absTol}`);
    assert.ok(c >= cosTol, `${name} text ${i + 1}: cosine ${c} < ${cosTol}`);
  }
}

test('model metadata', () => {
  assert.equal(model.dim, 384);
  assert.equal(model.max_seq, 256);
  assert.equal(model.file_bytes, bytes.length);
});

test('reference kernels: dense embeddings equal the host build', () => {
  checkAgainst('dense', model.embed(texts, REF));
});

test('reference kernels: top-k embeddings equal the host build, and differ from dense', () => {
  const { k_attn, k_ff } = hostRef.topk;
  const topk = model.embed(texts, { k_attn, k_ff, ...REF });
  checkAgainst('topk', topk);
  // The long text has more than k_attn tokens, so top-k must change it (else the option
  // did not reach the core).
  const long = texts.findIndex((t) => model.count_tokens(t) > k_attn);
  assert.ok(long >= 0);
  const dense = hostRef.dense.embeddings[long];
  assert.ok(maxAbsDiff(topk[long], dense) > 10 * ABS_TOL, 'top-k output equals dense');
});

test('reference kernels: top-k feed-forward embeddings equal the host build', () => {
  checkAgainst('topk_ff', model.embed(texts, { k_ff: hostRef.topk_ff.k_ff, ...REF }));
});

test('fast kernels (the default) match the host fast path, dense and top-k', () => {
  const dflt = model.embed(texts);
  const fast = model.embed(texts, { kernels: 'fast' });
  for (let i = 0; i < texts.length; i++) assert.deepEqual(Array.from(dflt[i]), Array.from(fast[i]));
  checkAgainst('fast', fast, FAST_ABS_TOL, FAST_COS_TOL);
  checkAgainst('fast_topk', model.embed(texts, { kernels: 'fast', k_attn: hostRef.fast_topk.k_attn }), FAST_ABS_TOL, FAST_COS_TOL);
});

test('fast kernels stay close to the reference kernels (int8 activations)', () => {
  const fast = model.embed(texts);
  const ref = hostRef.dense.embeddings;
  for (let i = 0; i < texts.length; i++) {
    const c = cosine(fast[i], ref[i]);
    assert.ok(c >= FAST_TO_REFERENCE_COS, `text ${i + 1}: cosine fast/reference ${c} < ${FAST_TO_REFERENCE_COS}`);
  }
});

test('plan: buffers and peak, and it grows with seq', () => {
  const p = model.plan(256, { k_attn: 32 });
  assert.equal(p.seq_len, 256);
  assert.ok(p.peak_bytes > 0 && p.peak_bytes % 16 === 0);
  assert.ok(Array.isArray(p.buffers) && p.buffers.length > 0);
  for (const b of p.buffers) {
    assert.equal(typeof b.name, 'string');
    assert.ok(b.offset + b.bytes <= p.peak_bytes, `${b.name} ends past the peak`);
  }
  assert.ok(model.plan(32).peak_bytes < model.plan(256).peak_bytes);
  assert.ok(p.vanilla_scores_bytes > 0);
});

test('garbage bytes throw an Error with the core message', () => {
  const junk = new Uint8Array(4096);
  for (let i = 0; i < junk.length; i++) junk[i] = (i * 2654435761) >>> 24;
  assert.throws(() => new Model(junk), (e) => e instanceof Error && /bad magic/.test(e.message));
  // A truncated real file: the header is right, the rest is missing.
  assert.throws(() => new Model(bytes.subarray(0, 1000)), Error);
});

test('a text over max_seq throws the core error; truncate cuts it instead', () => {
  const long = 'word '.repeat(300);
  assert.throws(
    () => model.embed([long]),
    (e) => e instanceof Error && /sequence of 302 tokens is longer than the maximum of 256/.test(e.message),
  );
  const [e] = model.embed([long], { truncate: true });
  assert.equal(e.length, model.dim);
});

test('bad options throw Errors, never trap', () => {
  assert.throws(() => model.embed(['a'], { chunk: 0 }), Error);
  assert.throws(() => model.embed(['a'], { k_attn: -1 }), /k_attn/);
  assert.throws(() => model.embed(['a'], { k_ff: 100000 }), Error);
  assert.throws(() => model.embed(['a'], { kernels: 'avx' }), /kernels must be "fast" or "reference"/);
  assert.throws(() => model.embed(['a'], { kernels: 1 }), /kernels/);
  // The model still works after errors.
  assert.equal(model.embed(['a'])[0].length, model.dim);
});

test('simd128 build: reference kernels give the bits of the scalar build, fast kernels its values', () => {
  // Reference: both builds sum in the same documented order with separate multiply and add,
  // so the tolerance is zero. Fast: the int8 products, the quantization and the attention
  // blocks are the same bits too; only GELU's exp differs (the simd128 polynomial against the
  // math library's), by a few ulps, which can move an int8 rounding of a later layer (the
  // fast tolerances of common.mjs).
  const scalar = new (require(join(OUT, 'pkg-node-scalar', 'topkit_wasm.js')).Model)(bytes);
  for (const opts of [{}, { k_attn: hostRef.topk.k_attn }, { k_ff: hostRef.topk_ff.k_ff }]) {
    const a = model.embed(texts, { ...opts, ...REF });
    const b = scalar.embed(texts, { ...opts, ...REF });
    for (let i = 0; i < a.length; i++) {
      assert.deepEqual(Array.from(a[i]), Array.from(b[i]), `text ${i + 1}, options ${JSON.stringify(opts)}`);
    }
    const fa = model.embed(texts, opts);
    const fb = scalar.embed(texts, opts);
    // Top-k feed-forward ranks the hidden units by |h|: a rounding difference of GELU can
    // swap two units of nearly equal magnitude at the edge of the kept set.
    const [absTol, cosTol] = opts.k_ff ? [TOPK_FF_FAST_ABS_TOL, TOPK_FF_FAST_COS_TOL] : [FAST_ABS_TOL, FAST_COS_TOL];
    for (let i = 0; i < fa.length; i++) {
      const what = `fast, text ${i + 1}, options ${JSON.stringify(opts)}`;
      const d = maxAbsDiff(fa[i], fb[i]);
      assert.ok(d <= absTol, `${what}: max |simd - scalar| = ${d}`);
      const c = cosine(fa[i], fb[i]);
      assert.ok(c >= cosTol, `${what}: cosine simd/scalar ${c}`);
    }
  }
  scalar.free();
});
