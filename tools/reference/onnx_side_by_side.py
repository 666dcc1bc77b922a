#!/usr/bin/env python3
"""onnxruntime side by side with topkit on all-MiniLM-L6-v2 (optional, not in CI).

Exports the model to ONNX with torch (once, into the cache), quantizes it with onnxruntime's
dynamic int8 recipe (per-channel weights, which keeps cosine ~0.985; the per-tensor default
gives ~0.915), times fp32 and int8 on ONE thread, tokenization included (the Hugging Face fast
tokenizer), on the same texts as `topkit-bench speed` (exactly N tokens), then runs
`topkit-bench speed --json` in the same run and prints one table with the ratios.

Setup (once): ~/.cache/topkit/venv-ref/bin/pip install onnx==1.19.1 onnxruntime==1.23.2
Run:          ~/.cache/topkit/venv-ref/bin/python tools/reference/onnx_side_by_side.py
              [--iters 15] [--seqs 32,128,256] [--bench PATH-to-topkit-bench]
(build the bench first: cargo build --release -p topkit-bench).

`--export-only` stops after the export and writes the sentence-transformers embeddings of the
bench texts to <cache>/onnx/reference-embeddings.json ({"32": [...384 floats], ...}): what
tools/reference/wasm_side_by_side.mjs (onnxruntime-web in node) reads.
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("TOPKIT_CACHE", Path.home() / ".cache/topkit"))
MODEL_DIR = CACHE / "models/all-MiniLM-L6-v2"
# The same words as benches/src/speed.rs: one WordPiece token each.
WORDS = (
    "the quick brown fox jumps over the lazy dog while a small bird sings in the "
    "old tree near the river and people walk along the road to the market every morning"
).split()


def text_of(n):
    return " ".join(WORDS[i % len(WORDS)] for i in range(max(n - 2, 0)))


def export(out_dir):
    """fp32 and int8 ONNX files of the bare BERT (last hidden state), cached."""
    import torch
    from transformers import AutoModel

    fp32 = out_dir / "minilm-fp32.onnx"
    int8 = out_dir / "minilm-int8-per-channel.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not fp32.exists():
        bert = AutoModel.from_pretrained(MODEL_DIR).eval()

        class Wrapped(torch.nn.Module):
            # Keyword arguments: the positional order of BertModel.forward changes between
            # transformers versions.
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        model = Wrapped().eval()
        torch.set_grad_enabled(False)
        ids = torch.ones(1, 16, dtype=torch.long)
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(fp32),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "b", 1: "n"} for k in ["input_ids", "attention_mask", "token_type_ids"]},
            opset_version=17,
            dynamo=False,
        )
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
    return fp32, int8


def write_reference(out_dir, seqs):
    """sentence-transformers embeddings (normalised) of text_of(n), as JSON keyed by n."""
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(MODEL_DIR), device="cpu")
    emb = {str(n): [float(v) for v in ref.encode([text_of(n)], normalize_embeddings=True)[0]] for n in seqs}
    path = out_dir / "reference-embeddings.json"
    path.write_text(json.dumps(emb))
    print(f"reference embeddings of {seqs} tokens in {path}")


def embed_fn(sess, tok):
    def embed(text):
        enc = tok(text, return_tensors="np")
        feeds = {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": enc["token_type_ids"].astype(np.int64),
        }
        h = sess.run(None, feeds)[0][0]
        e = h.mean(axis=0)
        return e / max(np.linalg.norm(e), 1e-12)

    return embed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--seqs", default="32,128,256")
    root = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    ap.add_argument("--bench", default=str(target / "release/topkit-bench"))
    ap.add_argument("--export-only", action="store_true")
    a = ap.parse_args()
    if a.export_only:
        print(export(CACHE / "onnx"))
        write_reference(CACHE / "onnx", [int(s) for s in a.seqs.split(",")])
        return

    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    fp32, int8 = export(CACHE / "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    engines = {
        "onnxruntime fp32": embed_fn(ort.InferenceSession(str(fp32), opts, providers=["CPUExecutionProvider"]), tok),
        "onnxruntime int8 (dynamic, per-channel)": embed_fn(
            ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"]), tok
        ),
    }
    ref = SentenceTransformer(str(MODEL_DIR), device="cpu")
    seqs = [int(s) for s in a.seqs.split(",")]
    rows = []
    for n in seqs:
        text = text_of(n)
        assert len(tok(text)["input_ids"]) == n, n
        want = ref.encode([text], normalize_embeddings=True)[0]
        for name, f in engines.items():
            for _ in range(2):
                f(text)
            times = []
            for _ in range(a.iters):
                t = time.perf_counter()
                e = f(text)
                times.append((time.perf_counter() - t) * 1e3)
            rows.append((n, name, statistics.median(times), float(np.dot(e, want))))
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run(
        [a.bench, "speed", "--json", "--iters", str(a.iters), "--seqs", a.seqs],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    for r in json.loads(out)["rows"]:
        rows.append((r["seq"], r["engine"], r["median_ms"], r["cosine_to_candle_f32"]))
    print(f"one thread, tokenization included, {a.iters} timed runs each (medians), same run")
    print("| seq | engine | median ms | ort int8 / this | cosine to reference |")
    print("|---:|---|---:|---:|---:|")
    for n in seqs:
        ort_int8 = next(r[2] for r in rows if r[0] == n and r[1].startswith("onnxruntime int8"))
        for r in (r for r in rows if r[0] == n):
            print(f"| {n} | {r[1]} | {r[2]:.2f} | {ort_int8 / r[2]:.2f} | {r[3]:.6f} |")
    print("cosine: onnxruntime to sentence-transformers; topkit and candle to candle f32.")


if __name__ == "__main__":
    main()
