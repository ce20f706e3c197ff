#!/usr/bin/env python3
"""Writes tokenizer/tests/fixtures/gpt2_tiktoken.json: GPT-2 ids produced by tiktoken.

tiktoken cannot download its `gpt2` files here, so the encoding is built from the very
files we bundle (tokenizer/data/gpt2/vocab.json + merges.txt): the mergeable ranks are the
vocabulary's token strings mapped back to bytes through GPT-2's byte<->unicode table, the
pattern is tiktoken's own gpt2 pattern, and <|endoftext|> = 50256. The script checks that
this Encoding gives tiktoken's pinned "hello world" -> [31373, 995] before writing.

Run from the repository root with the reference environment:
    ~/.cache/gpt-refenv/bin/python tools/tokenizer_fixtures.py
The Rust test (tokenizer/tests/gpt2_fixtures.rs) needs no Python.

With --check-corpora DIR (a dev check, nothing written), every UTF-8 file under DIR (e.g.
../shared/data: prose, logs, JSONL tasks, Spanish/English Bible, wikitext) is encoded by
tiktoken and by our Rust tokenizer (tokenizer/examples/tokenizer_bench.rs) and the ids
compared file by file.
"""
import json
import os
import random
import sys
import unicodedata

import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tokenizer", "tests", "fixtures", "gpt2_tiktoken.json")
CORPUS = os.environ.get(
    "GPT_CORPUS", os.path.join(ROOT, "..", "shared", "data", "corpus", "shakespeare.txt")
)

from tokenizer_common import DATA, PAT, gpt2_tiktoken  # noqa: E402  (PAT: tiktoken's gpt2 pattern)


def build_encoding():
    """tiktoken's gpt2 Encoding from the bundled files, after checking that merges.txt agrees
    with vocab.json's ranks (rule k makes token 256 + k)."""
    with open(os.path.join(DATA, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(DATA, "merges.txt"), encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#version")]
    for k, line in enumerate(lines):
        a, b = line.split(" ")
        assert vocab[a + b] == 256 + k, line
    return gpt2_tiktoken()


def rle(ids):
    """[[id, repeat], ...] for a long, repetitive id list."""
    out = []
    for i in ids:
        if out and out[-1][0] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return out


def assigned(cp):
    """Code points assigned in Python's Unicode version (so categories cannot differ
    between the Unicode versions of tiktoken's and our regex tables)."""
    if 0xD800 <= cp <= 0xDFFF:
        return False
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")


def random_strings(n, seed=1234):
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " " * 6 + "\t\n\r\x0b\x0c",
        "'" * 3 + "stmdrelv" + "SLTVRE",
        "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~",
        "\u00a0\u0085\u1680\u2000\u2003\u200a\u2028\u2029\u202f\u205f\u3000\u200b\ufeff",
        "\u0301\u0308\u0327\u093f\u0940\u0903\u05b7\u064b\u20dd\ufe0f\u200d",
        "éßøñüçÆŒ中文日本語한국어مرحباשלוםनमस्तेไทย",
        "½¾²³Ⅻⅻ٣۴४๕〇𝟘①",
        "😀👍🏽👨‍👩‍👧🏳️‍🌈🇫🇷❤️",
    ]
    out = []
    for _ in range(n):
        length = rng.randint(0, 40)
        chars = []
        for _ in range(length):
            r = rng.random()
            if r < 0.85:
                chars.append(rng.choice(rng.choice(pools)))
            else:
                while True:
                    cp = rng.randint(0x80, 0x10FFFF) if r < 0.9 else rng.randint(0x80, 0x2FFFF)
                    if assigned(cp):
                        chars.append(chr(cp))
                        break
        out.append("".join(chars))
    return out


def cases():
    with open(CORPUS, encoding="utf-8", newline="") as f:
        prose = f.read()[:20000]
    code = '''def encode(self, text: str) -> list[int]:
    """Encode `text`."""
    ids = []  # type: list[int]
    for piece in re.findall(PAT, text):
        ids.extend(self._bpe(piece.encode("utf-8")))
\treturn ids\r\n
fn main() {
    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();
    println!("{:?} {}", v, v.len()); // comment
    if a != b && c <= d || e >>= 2 { return Err(e)?; }
}
#include <stdio.h>
int main(void){printf("%d\\n",0x1F);return 0;}
'''
    return [
        ("hello world", "hello world"),
        ("empty", ""),
        ("single space", " "),
        ("tiktoken pinned", "hello <|endoftext|>"),
        ("prose shakespeare 20k", prose),
        ("prose modern", "The quick brown fox jumps over the lazy dog. It's 2 a.m.; "
         "\"Quotes\", (parentheses), and—em dashes… ellipses! Naïve café façade résumé."),
        ("source code", code),
        ("numbers and dates", "On 2024-03-15T13:45:07Z, 1,000,000.50 $ and 12345678901234567890; "
         "π≈3.14159, 1e-9, 0xDEADBEEF, 1/2 ½ x² Ⅻ ٣٤٥ ४५६ ๑๒๓ 10:30pm 3rd 21st (555) 123-4567"),
        ("whitespace runs", "a  b   c\t\td\n\n\ne \n \n  f\r\n\r\ng \t \t h    "),
        ("leading and trailing whitespace", "   leading\n\n  trailing   \t\n"),
        ("only whitespace", " \n\t \r\n  \u00a0 \u3000"),
        ("unicode whitespace", "x\u00a0y\u2003z\u3000w \u00a0v\u0085u\u2028t\u200bs"),
        ("contractions mixed case", "I'M you'RE he'S it's we'll they'LL I'd've don't 'tis ''s "
         "'S'T'Re'VE'M'LL'D 's 't 're 've 'm 'll 'd rock'n'roll O'Neil"),
        ("cjk", "中文分词测试：你好，世界！日本語のテキストです。한국어 텍스트입니다. 漢字かなカナ"),
        ("arabic", "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣ وعلامات التشكيل: مُحَمَّد"),
        ("hebrew", "שָׁלוֹם עוֹלָם"),
        ("devanagari", "नमस्ते दुनिया! हिन्दी पाठ में संयुक्ताक्षर: क्षत्रिय, ज्ञान, श्री। १२३"),
        ("thai", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ"),
        ("emoji zwj and skin tones", "Family 👨‍👩‍👧‍👦, thumbs 👍🏽👍🏿, flags 🏳️‍🌈 🇫🇷🇯🇵, "
         "heart ❤️ vs ❤, keycap 1️⃣, 🧑🏾‍💻 coding, 😀😃😄"),
        ("combining marks", "e\u0301 n\u0303 a\u0308\u0304 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ "
         "\u0301\u0301 x\u20dd"),
        ("control characters", "\x00\x01\x02\x7f\x1b[31mred\x1b[0m\x08"),
        ("special token inside text", "Hello<|endoftext|>World <|endoftext|> <|endoftext|>"
         "<|endoftext|>x<|endoftext <|endofprompt|> <|endoftext|>"),
        ("long word 600 bytes", "abc" * 200),
        ("long digits", "1234567890" * 100),
        ("long punctuation", "!?" * 300),
        ("long space run", " " * 1000 + "x" + " " * 1000),
        ("base64 blob", "TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsu" * 20),
        ("url and email", "https://example.com/path?q=1&r=two#frag user.name+tag@example.co.uk"),
    ]


def check_corpora(enc, top):
    import subprocess
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tokenizer_common import our_binary, read_ids

    binary = our_binary()
    bad = checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        ids_path = os.path.join(tmp, "ids.bin")
        for dirpath, _, files in sorted(os.walk(top)):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding="utf-8", newline="") as f:
                        text = f.read()
                except UnicodeDecodeError:
                    continue
                subprocess.run([binary, "encode", path, "--repeat", "1", "--ids-out", ids_path],
                               check=True, capture_output=True)
                same = read_ids(ids_path) == enc.encode_ordinary(text)
                checked += 1
                bad += not same
                print(f"{'ok  ' if same else 'DIFF'} {len(text.encode()):>10} B  {path}")
    print(f"{checked} files, {bad} differ")
    return 1 if bad else 0


def main():
    enc = build_encoding()
    if len(sys.argv) == 3 and sys.argv[1] == "--check-corpora":
        return check_corpora(enc, sys.argv[2])
    assert enc.encode("hello world") == [31373, 995], "pinned case failed"
    assert enc.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    out = {
        "generator": "tools/tokenizer_fixtures.py",
        "tiktoken_version": tiktoken.__version__,
        "pattern": PAT,
        "cases": [],
        "random": [],
        "long_runs": [],
    }
    for name, text in cases():
        ordinary = enc.encode_ordinary(text)
        specials = enc.encode(text, allowed_special="all")
        assert enc.decode_bytes(ordinary) == text.encode("utf-8")
        out["cases"].append(
            {"name": name, "text": text, "ordinary": ordinary, "with_specials": specials}
        )
    for text in random_strings(1500):
        out["random"].append([text, enc.encode_ordinary(text)])
    # Long runs are generated by the test itself; only their ids are stored (run-length).
    for ch, count, prefix in [("a", 1_000_000, ""), ("x", 1_000_000, " "), ("7", 100_000, "")]:
        ids = enc.encode_ordinary(prefix + ch * count)
        out["long_runs"].append({"prefix": prefix, "char": ch, "count": count, "ids_rle": rle(ids)})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(out['cases'])} cases, {len(out['random'])} random strings, "
          f"{len(out['long_runs'])} long runs ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
