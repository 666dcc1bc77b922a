// A tiny static server for the demo (no dependencies): www/ at /, the wasm-bindgen `web`
// package at /pkg/. `node test/serve.mjs [port]` serves it for a person; the browser test
// imports `serve`.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const WWW = resolve(HERE, '..', 'www');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
};

/** Serves on 127.0.0.1:`port` (0: any free port); resolves to { url, close }. */
export function serve(pkgDir, port = 0) {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const [root, rel] = path.startsWith('/pkg/')
      ? [resolve(pkgDir), path.slice('/pkg/'.length)]
      : [WWW, path === '/' ? 'index.html' : path.slice(1)];
    const file = normalize(join(root, rel));
    if (!file.startsWith(root + sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  return new Promise((ok) => {
    server.listen(port, '127.0.0.1', () => {
      const { port: p } = server.address();
      ok({ url: `http://127.0.0.1:${p}/`, close: () => new Promise((c) => server.close(c)) });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.env.TOPKIT_WASM_OUT ?? resolve(HERE, '..', '..', '..', 'target', 'wasm');
  const { url } = await serve(join(out, 'pkg-web'), Number(process.argv[2] ?? 8080));
  console.log(`topkit demo at ${url} (Ctrl-C to stop)`);
}
