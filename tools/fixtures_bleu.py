#!/usr/bin/env python3
"""Fixtures for `gpt bleu`: hypothesis/reference files (empty lines, punctuation, numbers,
HTML entities, Unicode) and sacreBLEU's corpus BLEU and chrF with its defaults
(`BLEU()`: 13a tokenizer, mixed case, exp smoothing; `CHRF()`: chrF2, char order 6).

Writes tests/fixtures/bleu/{NAME}.hyp, {NAME}.ref and expected.json, where expected.json maps
NAME to {"bleu", "bleu_none" (smooth_method="none"), "chrf", "bp", "precisions", "sys_len",
"ref_len"}. Files are read back exactly as Rust reads them: UTF-8, split on "\n" (no final
newline is written).

Run with the reference environment: ~/.cache/gpt-refenv/bin/python tools/fixtures_bleu.py
"""
import json
import os
import random

from sacrebleu.metrics import BLEU, CHRF

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "bleu")

HAND_REF = [
    "The cat sat on the mat.",
    "In 1999, prices rose by 3.5% -- to $1,200.50 per unit!",
    "",
    "« Où est la gare ? » demanda-t-il.",
    "Schöne Grüße aus München: 5-6 Tage, 12:30 Uhr.",
    "東京は日本の首都です。",
    "He said &quot;no&quot; &amp; left.",
    "Emoji 🙂 and tabs\there.",
    "The quick brown fox jumps over the lazy dog.",
    "A-B-C, (d) [e] {f} <g> /h/ 'i' \"j\"",
]
HAND_HYP = [
    "The cat sat on a mat .",
    "In 1999 prices rose 3.5 % to $1,200.50 a unit !",
    "something where the reference is empty",
    "« Où est la gare? » a-t-il demandé.",
    "Schöne Grüsse aus München : 5 - 6 Tage , 12:30 Uhr",
    "東京は日本の首都。",
    "He said \"no\" & left.",
    "",
    "The quick brown fox jumped over the lazy dogs.",
    "A-B-C, (d) [e] {f} <g> /h/ 'i' \"j\"",
]


def synthetic(seed, n):
    rng = random.Random(seed)
    words = ("the a of and to in is was he she it God land people day 3 4.5 1,000 x-ray "
             ", . ; : ! ? ( ) \" ' Señor niño café naïve Αθήνα").split()
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(words) for _ in range(rng.randint(0, 25))]
        hyp = [w if rng.random() < 0.7 else rng.choice(words) for w in ref]
        if rng.random() < 0.3:
            hyp = hyp[: rng.randint(0, len(hyp))]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return hyps, refs


def main():
    os.makedirs(OUT, exist_ok=True)
    sets = {
        "hand": (HAND_HYP, HAND_REF),
        "synthetic": synthetic(1, 300),
        "short": (["a b", "c"], ["a b c d", "c d"]),  # no 3/4-gram matches: smoothing matters
    }
    expected = {}
    for name, (hyps, refs) in sets.items():
        for ext, lines in (("hyp", hyps), ("ref", refs)):
            with open(os.path.join(OUT, f"{name}.{ext}"), "w", encoding="utf-8", newline="") as f:
                f.write("\n".join(lines))
        b = BLEU().corpus_score(hyps, [refs])
        bn = BLEU(smooth_method="none").corpus_score(hyps, [refs])
        c = CHRF().corpus_score(hyps, [refs])
        expected[name] = {
            "bleu": b.score,
            "bleu_none": bn.score,
            "chrf": c.score,
            "bp": b.bp,
            "precisions": b.precisions,
            "sys_len": b.sys_len,
            "ref_len": b.ref_len,
        }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(expected, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
