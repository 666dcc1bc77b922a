// Shared by the node tests, the browser test and the bench: paths from the xtask's
// environment, the texts and the host reference.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const OUT = process.env.TOPKIT_WASM_OUT;
export const MODEL = process.env.TOPKIT_MODEL;
export const TEXTS = process.env.TOPKIT_TEXTS;
if (!OUT || !MODEL || !TEXTS) {
  throw new Error('run through `cargo xtask test-wasm` (TOPKIT_WASM_OUT, TOPKIT_MODEL, TOPKIT_TEXTS)');
}

export const texts = readFileSync(TEXTS, 'utf8').split('\n').filter((l) => l.trim() !== '');
export const hostRef = JSON.parse(readFileSync(join(OUT, 'host-ref.json'), 'utf8'));

// Tolerance against the host: the same Rust code and the same f32 operations in the same
// order; only the math library differs (glibc's expf on the host, Rust's libm in wasm), a few
// ulps per call. The embeddings are L2-normalised (elements below 1), so 1e-4 absolute per
// element (and cosine >= 0.99999) is far above that noise and far below any real bug.
export const ABS_TOL = 1e-4;
export const COS_TOL = 0.99999;

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}
