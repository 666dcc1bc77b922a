#!/usr/bin/env python3
"""Golden blocks for topkit's GGUF dequantizers (tools/cli/src/import/gguf/dequant.rs).

Random block bytes of every ggml type topkit reads (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
Q4_K, Q5_K, Q6_K), each f16 scale field set to a random finite value, dequantized by gguf-py
(`gguf.quants.dequantize`, numpy), an implementation independent of topkit's.

    pip install gguf numpy
    python3 tools/reference/gguf_dequant_golden.py > tools/cli/tests/data/gguf_dequant_golden.json

Output: {"types": [{"name", "code", "blocks": hex of the block bytes,
"values": hex of the float32 values, little-endian}]}. Deterministic (seeded).
"""

import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# Byte offsets of the f16 scale fields in one block (ggml's block structs).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
BLOCKS = 3


def main():
    rng = np.random.default_rng(20261208)
    out = []
    for ty, fields in F16_FIELDS.items():
        elems, size = GGML_QUANT_SIZES[ty]
        raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
        for f in fields:
            scale = rng.uniform(-0.05, 0.05, size=BLOCKS).astype(np.float16)
            raw[:, f : f + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
        values = dequantize(raw.reshape(-1), ty).astype(np.float32).reshape(-1)
        assert values.size == BLOCKS * elems and np.isfinite(values).all()
        out.append(
            {
                "name": ty.name,
                "code": int(ty.value),
                "blocks": raw.tobytes().hex(),
                "values": values.astype("<f4").tobytes().hex(),
            }
        )
    json.dump({"types": out}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
