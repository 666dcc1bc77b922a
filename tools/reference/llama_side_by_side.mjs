#!/usr/bin/env node
// llama.cpp (through node-llama-cpp, its prebuilt CPU build) and `topkit generate` side by
// side on the same GGUF-derived model, one thread each, in one run: the engines alternate, every
// measurement is repeated, and the table gives medians (and ranges). Not in CI.
//
// What is measured, per engine and file:
// - decode tokens/s: 64 greedy tokens after a short prompt (the first 6 ids of the text), the
//   time of the 63 decode steps after the first token;
// - prefill tokens/s: a 512-token prompt (the first 512 ids of docs/eval-smollm2-text.ids) in
//   one call;
// - peak RSS of the process (GNU time's maximum resident set size; llama.cpp's includes the
//   node runtime, about 45 MB).
// Each measurement runs in a fresh process, so nothing stays warm but the page cache.
//
// Set-up (installs nothing itself): node-llama-cpp 3.22.1 in a cache directory, e.g.
//
//   mkdir -p ~/.cache/topkit/llama-node && cd ~/.cache/topkit/llama-node
//   npm install node-llama-cpp@3.22.1        # pulls @node-llama-cpp/linux-x64 (prebuilt)
//
// then, from the repository root (release build of the CLI first):
//
//   cargo build --release -p topkit-cli
//   node tools/reference/llama_side_by_side.mjs \
//     --node-modules ~/.cache/topkit/llama-node/node_modules \
//     --gguf ~/.cache/topkit/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
//     --tkm ~/.cache/topkit/models/SmolLM2-135M-Instruct-f32.tkm:fast:f32 \
//     --tkm ~/.cache/topkit/models/SmolLM2-135M-Instruct-int8.tkm:fast:int8 \
//     --reps 3
//
// `--tkm FILE[:KERNELS[:KV]]` adds a topkit setting (kernels `fast` or `reference`, KV cache
// `f32`, `f16` or `int8`; default fast, f32); repeat it for several. `--topkit PATH` names the
// binary (default target/release/topkit). The table (markdown) goes to stdout, progress to
// stderr. node-llama-cpp's API as used here: getLlama({gpu: false, build: "never"}),
// llama.loadModel({modelPath, gpuLayers: 0}), model.createContext({contextSize, batchSize,
// threads: 1}), context.getSequence(), sequence.evaluate(tokens, {temperature: 0}) (an async
// generator of greedy tokens), sequence.evaluateWithoutGeneratingNewTokens(tokens).

import { spawnSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const DECODE_TOKENS = 64;
const SHORT_PROMPT = 6;
const LONG_PROMPT = 512;

function parseArgs(argv) {
  const a = {
    reps: 3,
    tkm: [],
    topkit: "target/release/topkit",
    ids: "docs/eval-smollm2-text.ids",
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === "--node-modules") a.nodeModules = v();
    else if (k === "--gguf") a.gguf = v();
    else if (k === "--tkm") a.tkm.push(v());
    else if (k === "--topkit") a.topkit = v();
    else if (k === "--ids") a.ids = v();
    else if (k === "--reps") a.reps = Number(v());
    else if (k === "--worker") a.worker = v();
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

function readIds(path) {
  return readFileSync(path, "utf8")
    .split(/[\s,]+/)
    .filter((t) => t.length > 0)
    .map(Number);
}

// ---- worker: one llama.cpp measurement in this process, JSON on stdout ----

async function llamaWorker(a) {
  const url = pathToFileURL(join(resolve(a.nodeModules), "node-llama-cpp/dist/index.js"));
  const { getLlama } = await import(url.href);
  const llama = await getLlama({ gpu: false, build: "never" });
  const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: 1024,
    batchSize: LONG_PROMPT,
    threads: 1,
  });
  const sequence = context.getSequence();
  const ids = readIds(a.ids);
  const out = {};
  if (a.worker === "decode") {
    const prompt = ids.slice(0, SHORT_PROMPT);
    const tokens = [];
    let t1 = 0;
    const t0 = process.hrtime.bigint();
    for await (const tok of sequence.evaluate(prompt, { temperature: 0 })) {
      tokens.push(tok);
      // The first token comes after the prefill; the decode steps follow it.
      if (tokens.length === 1) t1 = process.hrtime.bigint();
      if (tokens.length === DECODE_TOKENS) break;
    }
    const t2 = process.hrtime.bigint();
    out.prefill_s = Number(t1 - t0) / 1e9;
    out.decode_tps = (DECODE_TOKENS - 1) / (Number(t2 - t1) / 1e9);
    out.ids = tokens;
  } else {
    const prompt = ids.slice(0, LONG_PROMPT);
    const t0 = process.hrtime.bigint();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    const t1 = process.hrtime.bigint();
    out.prefill_tps = LONG_PROMPT / (Number(t1 - t0) / 1e9);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

// ---- driver ----

/** Runs `cmd args` under GNU time; returns {stdout, rssKb}. */
function timed(cmd, args) {
  const r = spawnSync("/usr/bin/time", ["-f", "RSS_KB=%M", cmd, ...args], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}):\n${r.stderr}`);
  }
  const m = /RSS_KB=(\d+)/.exec(r.stderr);
  return { stdout: r.stdout, stderr: r.stderr, rssKb: m ? Number(m[1]) : NaN };
}

function lastJson(s) {
  const lines = s.trim().split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lines[i].startsWith("{")) return JSON.parse(lines.slice(i).join("\n"));
  }
  // Pretty-printed JSON: from the first "{" line.
  return JSON.parse(s.slice(s.indexOf("{")));
}

function llamaRun(a, what) {
  const self = new URL(import.meta.url).pathname;
  const args = [self, "--worker", what, "--node-modules", a.nodeModules, "--gguf", a.gguf, "--ids", a.ids];
  const r = timed(process.execPath, args);
  return { ...lastJson(r.stdout), rss_mb: r.rssKb / 1024 };
}

function topkitRun(a, setting, what) {
  const ids = readIds(a.ids);
  const n = what === "decode" ? SHORT_PROMPT : LONG_PROMPT;
  const prompt = ids.slice(0, n).join(",");
  const max = what === "decode" ? DECODE_TOKENS : 1;
  const args = [
    "generate", setting.file, "--prompt-ids", prompt, "--max-tokens", String(max),
    "--ignore-eos", "--json", "--kernels", setting.kernels, "--kv", setting.kv,
  ];
  const r = timed(a.topkit, args);
  const j = JSON.parse(r.stdout);
  return {
    decode_tps: j.decode.tokens_per_s,
    prefill_tps: j.prefill.tokens_per_s,
    ids: j.ids,
    rss_mb: r.rssKb / 1024,
  };
}

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function cell(xs, digits) {
  const f = (x) => x.toFixed(digits);
  return `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (!a.nodeModules || !a.gguf) throw new Error("give --node-modules and --gguf");
  if (a.worker) return llamaWorker(a);
  const settings = [
    { name: "llama.cpp (node-llama-cpp 3.22.1, CPU)", file: a.gguf, llama: true },
    ...a.tkm.map((spec) => {
      const [file, kernels = "fast", kv = "f32"] = spec.split(":");
      return { name: `topkit generate, ${kernels} kernels, ${kv} KV cache`, file, kernels, kv };
    }),
  ];
  const res = settings.map(() => ({ decode: [], prefill: [], rss: [], ids: null }));
  for (let rep = 0; rep < a.reps; rep++) {
    // Alternate the engines within each repetition (and the order between repetitions).
    const order = settings.map((_, i) => i);
    if (rep % 2 === 1) order.reverse();
    for (const i of order) {
      const s = settings[i];
      for (const what of ["decode", "prefill"]) {
        const r = s.llama ? llamaRun(a, what) : topkitRun(a, s, what);
        if (what === "decode") {
          res[i].decode.push(r.decode_tps);
          res[i].ids ??= r.ids;
        } else {
          res[i].prefill.push(r.prefill_tps);
        }
        res[i].rss.push(r.rss_mb);
        process.stderr.write(
          `rep ${rep + 1}/${a.reps} ${s.name} ${what}: ` +
            (what === "decode" ? `${r.decode_tps.toFixed(1)} tok/s` : `${r.prefill_tps.toFixed(1)} tok/s`) +
            `, ${r.rss_mb.toFixed(0)} MB\n`,
        );
      }
    }
  }
  const ref = res[0].ids ?? [];
  console.log(
    `| engine | file | decode tokens/s (${DECODE_TOKENS} greedy tokens after ${SHORT_PROMPT}), median (range) | ` +
      `prefill tokens/s (${LONG_PROMPT}-token prompt) | peak RSS, MB | greedy tokens equal to llama.cpp's (of ${DECODE_TOKENS}) |`,
  );
  console.log("|---|---|---:|---:|---:|---:|");
  settings.forEach((s, i) => {
    const r = res[i];
    const mb = (statSync(s.file).size / 1e6).toFixed(0);
    const same = r.ids ? r.ids.filter((t, j) => t === ref[j]).length : 0;
    console.log(
      `| ${s.name} | ${basename(s.file)} (${mb} MB) | ${cell(r.decode, 1)} | ${cell(r.prefill, 1)} | ` +
        `${cell(r.rss, 0)} | ${i === 0 ? "–" : same} |`,
    );
  });
  console.log(`\n${a.reps} repetitions, engines alternating; one thread each.`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack ?? e}\n`);
  process.exit(1);
});
