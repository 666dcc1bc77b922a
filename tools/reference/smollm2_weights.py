#!/usr/bin/env python3
"""Weight fingerprints of SmolLM2-135M-Instruct as Hugging Face `transformers` loads the Q4_1
GGUF (its own dequantization and its own undoing of llama.cpp's Q/K row permutation), to check
`topkit pack model.gguf` tensor by tensor without committing weights.

For each tensor (in HF's [out, in] layout): shape, sum, sum of |x|, a position-weighted sum
sum_i x[i] * ((i % 7) - 3) over the row-major flat index (sensitive to row order, hence to the
RoPE permutation and to transposes), and the first 16 values of rows 0, 1 and 63.

Writes tests/data/smollm2_weights.json. Run in ~/.cache/topkit/venv-ref:
  python tools/reference/smollm2_weights.py [GGUF] [OUT]
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from smollm2_golden import DEFAULT_GGUF  # noqa: E402

NAMES = {
    "model.embed_tokens.weight": "tok_emb",
    "model.norm.weight": "final_norm.w",
}
for i in (0, 29):
    p = f"model.layers.{i}"
    NAMES.update(
        {
            f"{p}.self_attn.q_proj.weight": f"l{i}.q.w",
            f"{p}.self_attn.k_proj.weight": f"l{i}.k.w",
            f"{p}.self_attn.v_proj.weight": f"l{i}.v.w",
            f"{p}.self_attn.o_proj.weight": f"l{i}.o.w",
            f"{p}.mlp.gate_proj.weight": f"l{i}.ffn.gate.w",
            f"{p}.mlp.up_proj.weight": f"l{i}.ffn.up.w",
            # topkit stores the down projection transposed.
            f"{p}.mlp.down_proj.weight": f"l{i}.ffn.down_t.w",
            f"{p}.input_layernorm.weight": f"l{i}.attn_norm.w",
            f"{p}.post_attention_layernorm.weight": f"l{i}.ffn_norm.w",
        }
    )


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests", "data", "smollm2_weights.json")
    d, f = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    sd = model.state_dict()
    rec = []
    for hf, ours in NAMES.items():
        t = sd[hf].detach().double()
        if ours.endswith("down_t.w"):
            t = t.t().contiguous()
        flat = t.reshape(-1)
        w = (torch.arange(flat.numel(), dtype=torch.float64) % 7) - 3
        rows = {}
        if t.dim() == 2:
            for r in (0, 1, 63):
                rows[str(r)] = [float(x) for x in t[r, :16]]
        else:
            rows["0"] = [float(x) for x in flat[:16]]
        rec.append(
            {
                "name": ours,
                "hf": hf,
                "shape": list(t.shape),
                "sum": float(flat.sum()),
                "abs_sum": float(flat.abs().sum()),
                "weighted_sum": float((flat * w).sum()),
                "rows": rows,
            }
        )
    import transformers

    doc = {
        "generator": "tools/reference/smollm2_weights.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tensors": rec,
    }
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=0)
    print("wrote", out, len(rec), "tensors")


if __name__ == "__main__":
    main()
