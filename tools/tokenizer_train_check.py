#!/usr/bin/env python3
"""Dev check of BPE training against Hugging Face `tokenizers` (needs the reference env).

1. Trains our byte-level BPE on the bundled corpus (default
   ../shared/data/corpus/shakespeare.txt, vocab 16384) with the Rust driver
   (tokenizer/examples/tokenizer_bench.rs) and HF's BpeTrainer configured the same way
   (byte-level, 256-byte initial alphabet, no prefix space, <|endoftext|>), and compares
   the merge lists rule by rule.
2. Loads OUR tokenizer.json with Python `tokenizers` and checks it encodes the corpus to
   exactly the ids our Rust tokenizer gives.
3. With --write-fixture, writes tokenizer/tests/fixtures/train_hf.json for the CI test
   (tokenizer/tests/train_hf.rs): a 200 KB slice of the corpus, HF's merges for vocab 1024
   on it, HF's own tokenizer.json, and the ids HF gives with HF's and with our vocabulary.

Both trainers see the text cut at the same safe boundaries (`safe_chunks`), which give the
same pre-tokenized words as the whole text. (HF's `train(files=...)` would instead split
each file into lines, which changes how whitespace runs at line ends are pre-tokenized.)

    ~/.cache/gpt-refenv/bin/python tools/tokenizer_train_check.py [--vocab-size N] [--write-fixture]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_common import ROOT, SHARED, hf_merges, hf_train, our_binary, read_ids, safe_chunks

FIXTURE = os.path.join(ROOT, "tokenizer", "tests", "fixtures", "train_hf.json")
CHUNK = 256 * 1024


def our_train(binary, corpus_path, vocab_size, out_dir, encode_path):
    ids_path = os.path.join(out_dir, "ids.bin")
    res = subprocess.run(
        [binary, "train", corpus_path, "--vocab-size", str(vocab_size), "--out", out_dir,
         "--encode", encode_path, "--ids-out", ids_path],
        check=True, capture_output=True, text=True,
    )
    stats = json.loads(res.stdout)
    with open(os.path.join(out_dir, "merges.txt"), encoding="utf-8") as f:
        merges = [l.rstrip("\n") for l in f if not l.startswith("#version") and l.strip()]
    return merges, read_ids(ids_path), stats


def compare_merges(ours, theirs):
    if ours == theirs:
        print(f"  merges: identical ({len(ours)} rules)")
        return True
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            print(f"  merges differ first at rule {i}: ours {a!r}, HF {b!r}")
            return False
    print(f"  merges: same prefix, lengths differ (ours {len(ours)}, HF {len(theirs)})")
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(SHARED, "shakespeare.txt"))
    ap.add_argument("--vocab-size", type=int, default=16384)
    ap.add_argument("--write-fixture", action="store_true")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    binary = our_binary()
    ok = True
    with open(args.corpus, encoding="utf-8", newline="") as f:
        text = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"corpus {args.corpus} ({len(text.encode())} bytes), vocab {args.vocab_size}")
        ours, our_ids, stats = our_train(binary, args.corpus, args.vocab_size, tmp, args.corpus)
        print(f"  ours: {stats}")
        hf = hf_train(safe_chunks(text, CHUNK), args.vocab_size)
        ok &= compare_merges(ours, hf_merges(hf))
        loaded = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
        hf_ids = loaded.encode(text).ids
        same = hf_ids == our_ids
        print(f"  our tokenizer.json in HF tokenizers: {len(hf_ids)} ids, "
              f"{'identical to ours' if same else 'DIFFERENT from ours'}")
        ok &= same
        ok &= loaded.decode(hf_ids) == text

    if args.write_fixture:
        corpus = text[:200_000]
        corpus = corpus[: corpus.rfind("\n") + 1]
        sample = corpus[:20_000] + "Unicode: naïve café, 中文, emoji 👍🏽, tabs\t\tand  spaces  \n"
        vocab = 1024
        with tempfile.TemporaryDirectory() as tmp:
            cpath, spath = os.path.join(tmp, "corpus.txt"), os.path.join(tmp, "sample.txt")
            with open(cpath, "w", encoding="utf-8") as f:
                f.write(corpus)
            with open(spath, "w", encoding="utf-8") as f:
                f.write(sample)
            ours, our_ids, _ = our_train(binary, cpath, vocab, tmp, spath)
            hf = hf_train(safe_chunks(corpus, CHUNK), vocab)
            theirs = hf_merges(hf)
            ok &= compare_merges(ours, theirs)
            ours_in_hf = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
            fixture = {
                "generator": "tools/tokenizer_train_check.py --write-fixture",
                "vocab_size": vocab,
                "corpus": corpus,
                "sample": sample,
                "hf_merges": theirs,
                "hf_tokenizer_json": hf.to_str(),
                "hf_ids_with_hf_vocab": hf.encode(sample).ids,
                "hf_ids_with_our_vocab": ours_in_hf.encode(sample).ids,
            }
            ok &= fixture["hf_ids_with_our_vocab"] == our_ids
        with open(FIXTURE, "w", encoding="utf-8") as f:
            json.dump(fixture, f, ensure_ascii=False)
        print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE)} bytes)")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
