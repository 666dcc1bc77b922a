#!/usr/bin/env python3
"""Golden token ids for topkit's byte-level BPE tokenizer (SmolLM2-135M-Instruct).

The independent reference is the Hugging Face `tokenizers` library behind `transformers`'
tokenizer built from the GGUF's `tokenizer.ggml.*` metadata (vocab, merges, special tokens),
with SmolLM2's own pre-tokenizer restored (Digits(individual) then ByteLevel with the GPT-2
pattern; see load_tokenizer in smollm2_golden.py for why). Special tokens such as
`<|im_start|>` written in the text are matched as whole tokens.

Texts: those of tests/data/wordpiece_golden.jsonl plus code, digit runs, emoji, CJK,
whitespace runs, contractions, leading spaces and special tokens.

Writes tests/data/bpe_golden.jsonl, one object a line: {"text", "ids", "decoded"} where
decoded = decode(ids) by the reference (special tokens kept).

Run (in ~/.cache/topkit/venv-ref with `pip install gguf accelerate`):
  python tools/reference/smollm2_tokenizer_golden.py [GGUF] > tests/data/bpe_golden.jsonl
"""

import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from smollm2_golden import DEFAULT_GGUF, load_tokenizer  # noqa: E402

EXTRA = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i] * b[i]; }",
    "    indented    by four\tand\ttabs\t\tdouble",
    "12345678901234567890 and 3.14159265358979 and 1,000,000 and 0x1F and 1e-10",
    "Phone: +1 (555) 123-4567, ZIP 90210, year 2024, 24/7, 9am-5pm",
    "Emoji 😀😃😄😁 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 👍🏽 and ❤️",
    "中文：今天天气很好。我们去公园散步吧！",
    "日本語：吾輩は猫である。名前はまだ無い。",
    "한국어: 빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
    "   leading spaces",
    "trailing spaces   ",
    " one leading space",
    "\n\nnewlines\n\n\nand more\r\n\r\nwindows",
    "a  b   c    d     e",
    "I'm you're he's she'll we've they'd can't won't Y'ALL'RE IT'S",
    "'s 're 've 'm 'll 'd 't",
    "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after end<|endoftext|><|endoftext|>",
    "not special: <|im_start |> <im_start> |im_end| <|unknown|>",
    "<repo_name>topkit<file_sep>src/lib.rs<filename>a.py<gh_stars>100",
    "x<|im_end|>y <|im_start|> z",
    "Arabic-Indic digits ٠١٢٣٤٥٦٧٨٩ and superscripts x²³ and ½ and Ⅻ",
    "ALLCAPS WORDS and MixedCase and snake_case_name and kebab-case-name",
    "https://example.com/path/to/page?query=1&other=two#frag",
    "user@example.org, @handle, #tag, $100.00, 50% off!!!",
    "    ",
    " ",
    "\t",
    "\n",
    "\u00a0non-breaking\u00a0spaces\u2003em space\u3000ideographic",
    "Ünïcödé àccents and ß and æ and œ",
    "a" * 200,
    "🙂" * 20,
    "..." * 30,
    # Bytes SmolLM2's vocabulary has no token for (0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, and the
    # lead byte 0xF1 of U+40000..): the reference drops them.
    "ctrl \x04 \x06 \x13\x14 \x16 \x1d end",
    "plane 4 \U00040000 and plane 15 \U000F0000 private",
]


def texts():
    out = []
    with open(os.path.join(ROOT, "tests", "data", "wordpiece_golden.jsonl"), encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
    out += EXTRA
    rng = random.Random(7)
    pool = "abcdefxyz ABC 0123456789 \n\t'.,!?-_()<>|éß中文😀" + "\u0301"
    for _ in range(40):
        out.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 60))))
    return out


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    d, f = os.path.split(gguf_path)
    tok = load_tokenizer(d, f)
    for text in texts():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        dec = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        print(json.dumps({"text": text, "ids": ids, "decoded": dec}, ensure_ascii=False))


if __name__ == "__main__":
    main()
