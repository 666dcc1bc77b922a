#!/usr/bin/env python3
"""Golden sentence embeddings of all-MiniLM-L6-v2 from the independent reference
implementation: sentence-transformers (PyTorch, CPU, float32), which tokenizes, runs BERT,
mean-pools over the attention mask and L2-normalises.

Usage (model fetched by `cargo xtask fetch-model`; a venv with `pip install
sentence-transformers`, a ~3 GB install that CI does not need):
    HF_HUB_OFFLINE=1 python3 tools/reference/minilm_golden.py \
        ~/.cache/topkit/models/all-MiniLM-L6-v2 > tests/data/minilm_golden.json
Writes {"model": ..., "max_seq_length": 256, "cases": [{"text", "ids", "embedding"}]}, with
embeddings rounded to 7 significant digits (well below the 1e-4 cosine bar).
"""
import json
import random
import sys

from sentence_transformers import SentenceTransformer

SHORT = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Top-k attention keeps only the largest scores for each query.",
    "Microcontrollers have kilobytes of RAM, not gigabytes.",
    "Café crème, naïve façade, Ångström — accents and dashes.",
    "中文句子：我爱自然语言处理。",
    "hello",
    "",
]

WORDS = (
    "the model reads a sentence and maps it to a vector so that similar sentences land close "
    "together while different ones land far apart this makes search clustering and "
    "deduplication simple on devices with little memory where every kilobyte of the static "
    "arena is planned before the firmware is flashed and checked against the board budget"
).split()


def long_texts():
    rng = random.Random(7)
    out = []
    # 200+ tokens (the top-k sweep needs long inputs) and past 256 (truncated by the model).
    for n in (210, 240, 300, 420):
        out.append(" ".join(rng.choice(WORDS) for _ in range(n)))
    return out


def main():
    model_dir = sys.argv[1]
    model = SentenceTransformer(model_dir, device="cpu")
    texts = SHORT + long_texts()
    emb = model.encode(texts, batch_size=1, convert_to_numpy=True, normalize_embeddings=False)
    tok = model.tokenizer
    cases = []
    for text, e in zip(texts, emb):
        ids = tok(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        cases.append({"text": text, "ids": ids, "embedding": [float(f"{x:.7g}") for x in e]})
    json.dump(
        {"model": "sentence-transformers/all-MiniLM-L6-v2", "max_seq_length": model.max_seq_length,
         "cases": cases},
        sys.stdout,
        ensure_ascii=False,
    )
    sys.stdout.write("\n")


main()
