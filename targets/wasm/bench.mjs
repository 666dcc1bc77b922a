// Median time to embed one 32-token and one 256-token text in node, dense and top-k
// (k_attn = 32), with the nodejs package: `node bench.mjs` after `cargo xtask test-wasm`
// (TOPKIT_WASM_OUT and TOPKIT_MODEL default to target/wasm and the cached MiniLM int8).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

const out = process.env.TOPKIT_WASM_OUT ?? join(import.meta.dirname, '..', '..', 'target', 'wasm');
const modelPath = process.env.TOPKIT_MODEL ?? join(homedir(), '.cache/topkit/models/all-MiniLM-L6-v2-int8.tkm');
const { Model } = createRequire(import.meta.url)(join(out, 'pkg-node', 'topkit_wasm.js'));
const model = new Model(new Uint8Array(readFileSync(modelPath)));

// A text of exactly `n` tokens ([CLS] and [SEP] included).
function textOf(n) {
  const words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly box'.split(' ');
  const w = [];
  while (model.count_tokens(w.join(' ')) < n) w.push(words[w.length % words.length]);
  if (model.count_tokens(w.join(' ')) !== n) throw new Error(`cannot make ${n} tokens`);
  return w.join(' ');
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const rows = [];
for (const n of [32, 256]) {
  const text = textOf(n);
  for (const [name, opts] of [['dense', {}], ['top-k (k_attn 32)', { k_attn: 32 }]]) {
    model.embed([text], opts); // warm-up
    const reps = n === 32 ? 21 : 7;
    const ms = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      model.embed([text], opts);
      ms.push(performance.now() - t0);
    }
    const peak = model.plan(model.max_seq, opts).peak_bytes;
    rows.push({ tokens: n, mode: name, median_ms: +median(ms).toFixed(1), reps, arena_bytes: peak });
  }
}
console.table(rows);
