// The demo page in Debian's chromium (playwright-core, never a downloaded browser): load the
// model through the file input, embed sentences, check the numbers the page shows against
// the host's `topkit embed`, and save a screenshot.
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { OUT, MODEL, texts, hostRef, cosine, FAST_ABS_TOL } from './common.mjs';
import { serve } from './serve.mjs';

const N = 4; // the first texts of test/texts.txt (the page embeds them densely)
const fail = (msg) => { throw new Error(msg); };

const server = await serve(join(OUT, 'pkg-web'));
const browser = await chromium.launch({
  executablePath: process.env.TOPKIT_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1200 } });
  const logs = [];
  page.on('console', (m) => logs.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(server.url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 30000 });

  // A garbage file first: the page must show the core's error, not crash.
  await page.setInputFiles('#file', { name: 'junk.tkm', mimeType: 'application/octet-stream', buffer: Buffer.alloc(4096, 7) });
  await page.waitForSelector('#error:not([hidden])', { timeout: 30000 });
  const err = await page.textContent('#error');
  if (!/bad magic/.test(err)) fail(`garbage file: page shows ${JSON.stringify(err)}`);

  await page.setInputFiles('#file', MODEL);
  await page.waitForSelector('#status[data-loaded="1"]', { timeout: 120000 });
  console.log(`page: ${await page.textContent('#status')}`);
  await page.fill('#texts', texts.slice(0, N).join('\n'));

  // Each kernel choice of the page against the host's run of the same kernels: the fast
  // ones (the page's default) with the fast tolerance of common.mjs, the reference ones with
  // 1e-4 (rounding of the shown digits, plus the wasm-vs-host float tolerance).
  for (const [kernels, hostName, tol] of [['fast', 'fast', FAST_ABS_TOL], ['reference', 'dense', 1e-4]]) {
    const ref = hostRef[hostName].embeddings.slice(0, N);
    await page.selectOption('#kernels', kernels);
    await page.click('#run');
    await page.waitForSelector('#results[data-done="1"]', { timeout: 120000 });
    if (!(await page.isHidden('#error'))) fail(`page error: ${await page.textContent('#error')}`);

    // Cosines shown with 4 decimals: the host's cosine, rounded, within the tolerance.
    const cells = await page.$$eval('#matrix tr', (rows) => rows.slice(1).map((r) => Array.from(r.querySelectorAll('td.v'), (td) => Number(td.textContent))));
    if (cells.length !== N) fail(`matrix has ${cells.length} rows, want ${N}`);
    let worst = 0;
    for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) {
      worst = Math.max(worst, Math.abs(cells[i][j] - cosine(ref[i], ref[j])));
    }
    if (worst > tol + 5e-5) fail(`${kernels}: similarity matrix differs from the host's by ${worst}`);
    // First embedding values shown with 6 decimals: host value within the tolerance + rounding.
    const heads = await page.$$eval('#timing td.head', (tds) => tds.map((td) => td.textContent.split(' ').map(Number)));
    let worstHead = 0;
    heads.forEach((h, i) => h.forEach((x, k) => { worstHead = Math.max(worstHead, Math.abs(x - ref[i][k])); }));
    if (heads.length !== N || worstHead > tol + 5e-7) fail(`${kernels}: embedding values differ from the host's by ${worstHead}`);
    const peak = Number(await page.getAttribute('#peak', 'data-bytes'));
    if (!(peak > 0)) fail('no planned peak shown');
    const nn = await page.$$eval('#nn tr', (r) => r.length - 1);
    if (nn !== N) fail(`nearest-neighbour table has ${nn} rows`);
    const times = await page.$$eval('#timing tr', (rows) => rows.slice(1).map((r) => r.children[2].textContent));
    console.log(`browser, ${kernels} kernels: cosines within ${worst.toExponential(1)}, values within ${worstHead.toExponential(1)} of the host; peak ${peak} bytes; ms per text ${times.join(', ')}`);
  }
  // The screenshot shows the default (fast) kernels.
  await page.selectOption('#kernels', 'fast');
  await page.click('#run');
  await page.waitForSelector('#results[data-done="1"]', { timeout: 120000 });

  const shot = join(OUT, 'demo-screenshot.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
  await server.close();
}
