// The demo page: loads a .tkm file into topkit's wasm Model, embeds the sentences one at a
// time (timed), and shows the plan, a cosine heatmap and nearest neighbours.
import init, { Model } from './pkg/topkit_wasm.js';

const $ = (id) => document.getElementById(id);
const BUILT_IN = [
  'A man is playing a guitar.',
  'A woman is slicing an onion.',
  'Someone is riding a bicycle down the street.',
  'The cat sleeps on the sofa.',
  'A child is holding a puppy.',
  'The stock market fell sharply today.',
  'It is raining heavily in the city.',
  'A chef is cooking pasta in the kitchen.',
  'Two people are eating dinner at a restaurant.',
  'The rocket launched into orbit.',
];

let model = null;
let builtIn = null; // { key, embeddings } for the options they were made with

function showError(e) {
  const box = $('error');
  box.textContent = e ? `Error: ${e.message ?? e}` : '';
  box.hidden = !e;
}

function options() {
  const n = (id) => ($(id).value.trim() === '' ? null : Number($(id).value));
  return { k_attn: n('k_attn'), k_ff: n('k_ff'), chunk: n('chunk') ?? 16, kernels: $('kernels').value };
}

async function readWithProgress(file) {
  const bar = $('progress');
  bar.hidden = false;
  bar.max = file.size || 1;
  bar.value = 0;
  const out = new Uint8Array(file.size);
  let at = 0;
  const reader = file.stream().getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.set(value, at);
    at += value.length;
    bar.value = at;
    $('status').textContent = `reading ${file.name}: ${(at / 1e6).toFixed(1)} of ${(file.size / 1e6).toFixed(1)} MB`;
  }
  return out;
}

async function load(file) {
  showError(null);
  model?.free();
  model = null;
  builtIn = null;
  $('run').disabled = true;
  $('results').hidden = true;
  try {
    const bytes = await readWithProgress(file);
    $('status').textContent = `checking ${file.name}...`;
    await new Promise((r) => setTimeout(r)); // let the status paint
    const t0 = performance.now();
    model = new Model(bytes);
    const ms = performance.now() - t0;
    $('status').textContent = `loaded ${file.name}: ${bytes.length} bytes, dim ${model.dim}, max_seq ${model.max_seq} (checked in ${ms.toFixed(0)} ms)`;
    $('status').dataset.loaded = '1';
    $('run').disabled = false;
  } catch (e) {
    $('status').textContent = 'no model loaded';
    showError(e);
  } finally {
    $('progress').hidden = true;
  }
}

const cos = (a, b) => {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
};

function heat(v) {
  // White at 0, deep blue at 1 (negative cosines stay white).
  const t = Math.max(0, Math.min(1, v));
  const c = (x) => Math.round(255 - t * (255 - x));
  return `rgb(${c(33)},${c(102)},${c(172)})`;
}

const esc = (s) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

function render(texts, embs, times, tokens, opts) {
  const plan = model.plan(model.max_seq, opts);
  const kib = (b) => `${(b / 1024).toFixed(1)} KiB`;
  $('plan').innerHTML = `<p>Planned arena for ${plan.seq_len} tokens, chunk ${plan.chunk}` +
    `${opts.k_attn ? `, top-${opts.k_attn} attention` : ', dense attention'}` +
    `${opts.k_ff ? `, top-${opts.k_ff} feed-forward` : ''}: ` +
    `<b id="peak" data-bytes="${plan.peak_bytes}">${kib(plan.peak_bytes)}</b> ` +
    `(${plan.peak_bytes} bytes, one allocation; vanilla attention scores alone: ${kib(plan.vanilla_scores_bytes)}).</p>`;

  let m = '<tr><th></th>' + texts.map((_, j) => `<th>${j + 1}</th>`).join('') + '</tr>';
  texts.forEach((t, i) => {
    m += `<tr><th class="row" title="${esc(t)}">${i + 1}. ${esc(t)}</th>`;
    embs.forEach((_, j) => {
      const v = cos(embs[i], embs[j]);
      m += `<td class="v" style="background:${heat(v)};color:${v > 0.6 ? '#fff' : '#000'}">${v.toFixed(4)}</td>`;
    });
    m += '</tr>';
  });
  $('matrix').innerHTML = m;

  let nn = '<tr><th>sentence</th><th>nearest built-in sentences (cosine)</th></tr>';
  texts.forEach((t, i) => {
    const ranked = builtIn.embeddings.map((e, j) => [cos(embs[i], e), BUILT_IN[j]]).sort((a, b) => b[0] - a[0]);
    nn += `<tr><td>${esc(t)}</td><td>${ranked.slice(0, 3).map(([v, s]) => `${esc(s)} (${v.toFixed(3)})`).join('<br>')}</td></tr>`;
  });
  $('nn').innerHTML = nn;

  let tt = '<tr><th>#</th><th>tokens</th><th>time (ms)</th><th>first values of the embedding</th></tr>';
  texts.forEach((_, i) => {
    tt += `<tr><td>${i + 1}</td><td class="num">${tokens[i]}</td><td class="num">${times[i].toFixed(1)}</td>` +
      `<td class="head">${Array.from(embs[i].slice(0, 4), (x) => x.toFixed(6)).join(' ')}</td></tr>`;
  });
  $('timing').innerHTML = tt;
  $('results').hidden = false;
}

async function run() {
  showError(null);
  $('run').disabled = true;
  $('results').dataset.done = '';
  try {
    const texts = $('texts').value.split('\n').map((s) => s.trim()).filter((s) => s !== '');
    if (texts.length === 0) throw new Error('type at least one sentence');
    const opts = options();
    const key = JSON.stringify(opts);
    if (builtIn?.key !== key) builtIn = { key, embeddings: model.embed(BUILT_IN, opts) };
    const embs = [], times = [], tokens = [];
    for (const t of texts) {
      tokens.push(model.count_tokens(t));
      const t0 = performance.now();
      embs.push(model.embed([t], opts)[0]);
      times.push(performance.now() - t0);
    }
    render(texts, embs, times, tokens, opts);
    $('results').dataset.done = '1';
  } catch (e) {
    showError(e);
  } finally {
    $('run').disabled = !model;
  }
}

await init();
$('file').addEventListener('change', (e) => e.target.files[0] && load(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer.files[0];
  if (f) load(f);
});
$('run').addEventListener('click', run);
document.body.dataset.ready = '1';
