#!/usr/bin/env python3
"""Tokenizer benchmark: ours vs tiktoken vs Hugging Face `tokenizers`, same run, same text.

Encoding: a >= 10 MB English text (default: the complete Shakespeare twice) is encoded
single-threaded (whole text) and on all threads (the text cut at safe boundaries into
~64 KB chunks, batch-encoded), by our Rust tokenizer (tokenizer/examples/tokenizer_bench.rs,
release build), tiktoken (`encode_ordinary`, `encode_ordinary_batch`) and HF `tokenizers`
(`encode`, `encode_batch`), all from the same GPT-2 vocab.json + merges.txt. Prints MB/s,
our speed-up over each, and checks every id sequence is identical to ours.

Training (--train): a byte-level BPE of --vocab-size on the same text, ours (Rust driver)
and HF's BpeTrainer (same settings, same safe chunks), each in its own process: seconds,
peak resident memory, and whether the merge lists are equal.

    ~/.cache/gpt-refenv/bin/python bench/tokenizer.py [--text FILE] [--repeat 3] [--train]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from tokenizer_common import SHARED, gpt2_tiktoken, hf_gpt2, our_binary, read_ids

HF_TRAIN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from tokenizer_common import hf_train, hf_merges, safe_chunks
text = open(sys.argv[2], encoding="utf-8", newline="").read()
t = time.perf_counter()
tok = hf_train(safe_chunks(text, 256 * 1024), int(sys.argv[3]))
secs = time.perf_counter() - t
json.dump(hf_merges(tok), open(sys.argv[4], "w", encoding="utf-8"))
print(json.dumps({"train_s": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def best_of(n, fn):
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", help="UTF-8 text file (default: shakespeare_complete.txt twice)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="also benchmark training")
    ap.add_argument("--vocab-size", type=int, default=16384)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="gpt-tok-bench-")
    path = args.text
    if path is None:
        with open(os.path.join(SHARED, "shakespeare_complete.txt"), encoding="utf-8", newline="") as f:
            one = f.read()
        path = os.path.join(tmp, "shakespeare_x2.txt")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(one + one)
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    mb = len(text.encode("utf-8")) / 1e6
    threads = os.cpu_count()
    print(f"text: {path} ({mb:.2f} MB), {threads} threads, best of {args.repeat}")

    binary = our_binary()
    ids_path, chunks_path = os.path.join(tmp, "ids.bin"), os.path.join(tmp, "chunks.txt")
    res = subprocess.run(
        [binary, "encode", path, "--repeat", str(args.repeat), "--ids-out", ids_path,
         "--chunks-out", chunks_path],
        check=True, capture_output=True, text=True,
    )
    ours = json.loads(res.stdout)
    our_ids = read_ids(ids_path)
    # The same chunks as ours: cut the UTF-8 bytes at the lengths our driver reports.
    with open(chunks_path) as f:
        our_chunk_lens = [int(x) for x in f.read().split()]
    data, chunks, at = text.encode("utf-8"), [], 0
    for n in our_chunk_lens:
        chunks.append(data[at:at + n].decode("utf-8"))
        at += n
    assert "".join(chunks) == text

    rows = [("ours (Rust)", mb / ours["single_s"], mb / ours["batch_s"], True)]
    enc = gpt2_tiktoken()
    s1, ids1 = best_of(args.repeat, lambda: enc.encode_ordinary(text))
    sn, idsn = best_of(args.repeat, lambda: enc.encode_ordinary_batch(chunks, num_threads=threads))
    same = ids1 == our_ids and [i for c in idsn for i in c] == our_ids
    rows.append(("tiktoken " + __import__("tiktoken").__version__, mb / s1, mb / sn, same))

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    hf = hf_gpt2()
    s1, e1 = best_of(args.repeat, lambda: hf.encode(text).ids)
    sn, en = best_of(args.repeat, lambda: hf.encode_batch(chunks))
    same = e1 == our_ids and [i for e in en for i in e.ids] == our_ids
    rows.append(("HF tokenizers " + __import__("tokenizers").__version__, mb / s1, mb / sn, same))

    print(f"{'encoder':<22} {'1 thread MB/s':>14} {'all threads MB/s':>17} "
          f"{'ours/it 1T':>11} {'ours/it nT':>11}  ids")
    for name, a, b, same in rows:
        print(f"{name:<22} {a:>14.1f} {b:>17.1f} {rows[0][1] / a:>10.2f}x {rows[0][2] / b:>10.2f}x"
              f"  {'identical' if same else 'DIFFERENT'}")
    print(f"tokens: {len(our_ids)}; our GPT-2 load time {ours['load_s'] * 1000:.0f} ms")
    ok = all(r[3] for r in rows)

    if args.train:
        out = os.path.join(tmp, "ours")
        t = time.perf_counter()
        res = subprocess.run([binary, "train", path, "--vocab-size", str(args.vocab_size),
                              "--out", out], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t
        st = json.loads(res.stdout)
        with open(os.path.join(out, "merges.txt"), encoding="utf-8") as f:
            our_merges = [l.rstrip("\n") for l in f if not l.startswith("#version") and l.strip()]
        hf_merges_path = os.path.join(tmp, "hf_merges.json")
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", HF_TRAIN, os.path.join(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__))), "tools"), path, str(args.vocab_size),
            hf_merges_path], check=True, capture_output=True, text=True)
        hf_wall = time.perf_counter() - t
        hs = json.loads(res.stdout.strip().splitlines()[-1])
        with open(hf_merges_path, encoding="utf-8") as f:
            theirs = json.load(f)
        same = our_merges == theirs
        print(f"\ntraining vocab {args.vocab_size} on {mb:.2f} MB ({st['distinct_words']} distinct words)")
        print(f"{'trainer':<22} {'train s':>9} {'process s':>10} {'peak RSS MB':>12}")
        print(f"{'ours (Rust)':<22} {st['train_s']:>9.2f} {wall:>10.2f} {st['peak_rss_mb']:>12.1f}"
              f"   (count {st['count_s']:.2f} s, merges {st['merge_s']:.2f} s)")
        print(f"{'HF BpeTrainer':<22} {hs['train_s']:>9.2f} {hf_wall:>10.2f} {hs['peak_rss_mb']:>12.1f}"
              f"   (peak includes the Python interpreter and the text)")
        print(f"speed-up {hs['train_s'] / st['train_s']:.1f}x; merges "
              f"{'identical' if same else 'DIFFERENT'} ({len(our_merges)} vs {len(theirs)} rules)")
        ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
