// The JS API of the nodejs package against the host's `topkit embed` (same model, same texts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { OUT, MODEL, texts, hostRef, ABS_TOL, COS_TOL, maxAbsDiff, cosine } from './common.mjs';

const require = createRequire(import.meta.url);
const { Model } = require(join(OUT, 'pkg-node', 'topkit_wasm.js'));
const bytes = new Uint8Array(readFileSync(MODEL));
const model = new Model(bytes);

function checkAgainst(name, out) {
  const ref = hostRef[name].embeddings;
  assert.equal(out.length, ref.length);
  for (let i = 0; i < out.length; i++) {
    assert.ok(out[i] instanceof Float32Array);
    assert.equal(out[i].length, model.dim);
    const d = maxAbsDiff(out[i], ref[i]);
    const c = cosine(out[i], ref[i]);
    assert.ok(d <= ABS_TOL, `${name} text ${i + 1}: max |wasm - host| = ${d} > ${ABS_TOL}`);
    assert.ok(c >= COS_TOL, `${name} text ${i + 1}: cosine ${c} < ${COS_TOL}`);
  }
}

test('model metadata', () => {
  assert.equal(model.dim, 384);
  assert.equal(model.max_seq, 256);
  assert.equal(model.file_bytes, bytes.length);
});

test('dense embeddings equal the host build', () => {
  checkAgainst('dense', model.embed(texts));
});

test('top-k embeddings equal the host build, and differ from dense', () => {
  const { k_attn, k_ff } = hostRef.topk;
  const topk = model.embed(texts, { k_attn, k_ff });
  checkAgainst('topk', topk);
  // The long text has more than k_attn tokens, so top-k must change it (else the option
  // did not reach the core).
  const long = texts.findIndex((t) => model.count_tokens(t) > k_attn);
  assert.ok(long >= 0);
  const dense = hostRef.dense.embeddings[long];
  assert.ok(maxAbsDiff(topk[long], dense) > 10 * ABS_TOL, 'top-k output equals dense');
});

test('top-k feed-forward embeddings equal the host build', () => {
  checkAgainst('topk_ff', model.embed(texts, { k_ff: hostRef.topk_ff.k_ff }));
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
  // The model still works after errors.
  assert.equal(model.embed(['a'])[0].length, model.dim);
});

test('simd128 build gives the same bits as the scalar (generic kernel) build', () => {
  // Both kernels sum in the same documented order with separate multiply and add, so the
  // tolerance is zero: every f32 must be identical.
  const scalar = new (require(join(OUT, 'pkg-node-scalar', 'topkit_wasm.js')).Model)(bytes);
  for (const opts of [{}, { k_attn: hostRef.topk.k_attn }, { k_ff: hostRef.topk_ff.k_ff }]) {
    const a = model.embed(texts, opts);
    const b = scalar.embed(texts, opts);
    for (let i = 0; i < a.length; i++) {
      assert.deepEqual(Array.from(a[i]), Array.from(b[i]), `text ${i + 1}, options ${JSON.stringify(opts)}`);
    }
  }
  scalar.free();
});
