#!/usr/bin/env python3
"""Golden token ids for topkit's WordPiece tokenizer, from the independent reference: the
Hugging Face `tokenizers` library (the fast tokenizer sentence-transformers uses) loading
all-MiniLM-L6-v2's own tokenizer.json, truncating to the model's max_seq_length (256).

Usage (model fetched by `cargo xtask fetch-model`; needs `pip install tokenizers`):
    python3 tools/reference/wordpiece_golden.py ~/.cache/topkit/models/all-MiniLM-L6-v2 \
        > tests/data/wordpiece_golden.jsonl
Writes one JSON object per line: {"text": ..., "ids": [...]}.
"""
import json
import random
import sys

from tokenizers import Tokenizer

MAX_SEQ = 256

SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is riding a horse.",
    "Sentence embeddings map text to vectors.",
    "Top-k attention keeps only the k largest scores per query.",
    "It's 3:45pm; the meeting (room 2B) starts at 4.",
    "E-mail me at someone@example.com or visit https://example.org/path?q=1&r=2.",
    "Numbers: 3.14159, 2,718, -42, 1e-9, 100%, $5.00, €10, £3.",
    "Unbelievably, the unaffordable transmogrification was hyperparameterized.",
    "Don't stop believin' — hold on to that feelin'.",
    "CAPITAL LETTERS AND MiXeD CaSe WoRdS.",
    "Café crème, naïve façade, coöperate, résumé, jalapeño, Ångström, São Paulo.",
    "Über die Brücke gehen fünf Mädchen; Straße, Größe, weiß.",
    "¿Dónde está la biblioteca? ¡Está aquí!",
    "Ça va? Oui, très bien, merci. L'été est arrivé à Noël.",
    "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Þetta er íslenska. Færeyskt og dansk: ø, æ, å.",
    "Ελληνικά: Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "ΣΊΣΥΦΟΣ ΟΔΥΣΣΕΥΣ",
    "Русский текст: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Українська: Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
    "中文句子：我爱自然语言处理。",
    "日本語の文章です。ひらがなとカタカナ、漢字。",
    "한국어 문장입니다. 안녕하세요!",
    "العربية: مرحبا بالعالم",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया",
    "ภาษาไทย สวัสดีครับ",
    "Tiếng Việt: Xin chào thế giới, phở bò.",
    "Emoji: 😀 😂 👍 🎉 ❤ ☺",
    "Math: ∑ x² ≤ ∫ f(x) dx, α + β = γ, √2 ≈ 1.414, ∞.",
    "Quotes: “double” ‘single’ «guillemets» „German“ 「Japanese」",
    "Dashes – and — and ‐ and ‑ and ‒ and ―",
    "Ellipsis… and bullet • and dagger † and section § and pilcrow ¶.",
    "Tabs\tand\nnewlines\r\nand   multiple   spaces.",
    "Zero\u200bwidth\u200cjoiners\u200dand\u2060word joiner.",
    "Soft\u00adhyphen and non\u00a0breaking space and ideographic\u3000space.",
    "Control \u0007 bell and \u001b escape and \u007f delete.",
    "Replacement \ufffd char and NUL \u0000 char.",
    "Combining: e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 (decomposed accents).",
    "Ligatures: ﬁ ﬂ ﬀ ﬃ and fullwidth ＡＢＣ１２３ and halfwidth ｶﾀｶﾅ.",
    "Roman numerals Ⅻ and circled ① ② and superscript ¹²³ and fractions ½ ¼.",
    "İstanbul, ıslak, DİYARBAKIR (Turkish dotted and dotless i).",
    "ǅungla, ǈudevit, ǋenan (titlecase digraphs).",
    "a" * 99,
    "b" * 100,
    "c" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "x" * 30 + "é" * 80,
    "C++ and C# and F# are languages; so is Rust (rustc --edition 2024).",
    "fn main() { println!(\"hello {}\", 42); } // comment",
    "<html><body class=\"x\">Text &amp; more</body></html>",
    "#hashtag @mention $TICKER ~tilde `backtick` ^caret |pipe| \\backslash",
    "snake_case camelCase kebab-case PascalCase SCREAMING_SNAKE",
    "version 1.2.3-beta+build.5, IPv4 192.168.0.1, MAC 00:1A:2B:3C:4D:5E",
    "",
    "   ",
    "!!!???...,,,;;;",
    "a",
    "[CLS] [SEP] [UNK] [PAD] [MASK] are special tokens in text.",
    "##suffix and ## and #",
    "Mr. Smith went to Washington D.C. on Jan. 5th, 2021.",
    "The U.S.A. and the U.K. signed an agreement.",
    "He said, \"I'll be there at 10 o'clock.\"",
    "Rock 'n' roll isn't dead; it's evolving.",
    "The temperature was -5°C (23°F) at 06:00.",
    "Ψ(x) = A·e^(ikx) — a plane wave.",
    "Ⓐⓑⓒ 🄰🄱🄲 𝐀𝐁𝐂 𝔄𝔅ℭ 𝕒𝕓𝕔",
    "Lao ສະບາຍດີ, Khmer សួស្តី, Myanmar မင်္ဂလာပါ, Georgian გამარჯობა, Armenian Բարեւ",
    "Amharic ሰላም, Cherokee ᏣᎳᎩ, Inuktitut ᐊᐃᓐᓇᖅ, Mongolian ᠮᠣᠩᠭᠣᠯ",
    "Tamil வணக்கம், Telugu నమస్కారం, Kannada ನಮಸ್ಕಾರ, Malayalam നമസ്കാരം, Bengali নমস্কার",
    "Sinhala ආයුබෝවන්, Gujarati નમસ્તે, Punjabi ਸਤ ਸ੍ਰੀ ਅਕਾਲ, Odia ନମସ୍କାର",
]

WORDS = (
    "the of and to in is was that for on are with as his they be at one have this from or had "
    "by hot word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find any new work "
    "part take get place made live where after back little only round man year came show every "
    "good me give our under name very through just form sentence great think say help low line "
    "transformer attention embedding quantization microcontroller firmware memory budget "
    "inference tokenizer vocabulary gradient optimizer convolution recurrent autoregressive"
).split()

EXTRA_CHARS = (
    list(".,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|")
    + list("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœšžčćđ")
    + list("αβγδεζηθικλμνξοπρστυφχψω")
    + list("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")
    + list("的一是不了人我在有他这为之大来以个中上们")
    + list("あいうえおかきくけこアイウエオカキクケコ")
    + list("가나다라마바사아자차카타파하")
    + list("€£¥©®™°±×÷µ¶·¿¡«»“”‘’–—…")
    + ["😀", "🙂", "👍", "🚀", "\u0301", "\u0308", "\u200b", "\t", "\u00a0"]
)


def generated(rng, n):
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 25)):
            r = rng.random()
            if r < 0.6:
                w = rng.choice(WORDS)
                if rng.random() < 0.3:
                    w = w.capitalize()
                if rng.random() < 0.1:
                    w = w.upper()
                parts.append(w)
            elif r < 0.85:
                parts.append("".join(rng.choice(EXTRA_CHARS) for _ in range(rng.randint(1, 4))))
            else:
                parts.append(rng.choice(WORDS) + rng.choice(EXTRA_CHARS) + rng.choice(WORDS))
        out.append(" ".join(parts))
    return out


def long_texts(rng):
    # Longer than 256 tokens: the reference truncates them to [CLS] + 254 tokens + [SEP].
    out = []
    for n in (260, 300, 600):
        out.append(" ".join(rng.choice(WORDS) for _ in range(n)))
    out.append(" ".join(SENTENCES[:40]))
    out.append("".join(rng.choice(EXTRA_CHARS[:60]) for _ in range(400)))
    return out


def main():
    model_dir = sys.argv[1]
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_SEQ)
    rng = random.Random(20261123)
    texts = SENTENCES + generated(rng, 250) + long_texts(rng)
    for text in texts:
        ids = tok.encode(text).ids
        print(json.dumps({"text": text, "ids": ids}, ensure_ascii=False))


main()
