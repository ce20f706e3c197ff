"""Helpers shared by the tokenizer dev scripts (tools/tokenizer_*.py, bench/tokenizer.py).

- `gpt2_tiktoken()`: a tiktoken Encoding built from our bundled GPT-2 files.
- `hf_gpt2()`: a Hugging Face `tokenizers` Tokenizer built from the same files.
- `safe_chunks(text, target)`: the same cut points as the Rust `split_at_safe_boundaries`
  (after a newline with an ASCII graphic character on both sides), so batch encoders and
  trainers see the same pieces as a whole-text pass.
- `hf_train(chunks, vocab_size)`: HF's BpeTrainer configured like ours (byte-level, full
  256-byte initial alphabet, no prefix space, <|endoftext|>).
- `our_binary()`: builds and returns the path of the Rust benchmark driver.
"""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tokenizer", "data", "gpt2")
SHARED = os.path.join(ROOT, "..", "shared", "data", "corpus")
PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def bytes_to_unicode():
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def gpt2_tiktoken():
    import tiktoken

    u2b = {v: k for k, v in bytes_to_unicode().items()}
    with open(os.path.join(DATA, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    ranks = {bytes(u2b[c] for c in t): i for t, i in vocab.items() if t != "<|endoftext|>"}
    enc = tiktoken.Encoding(
        name="gpt2_local", pat_str=PAT, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
    assert enc.encode("hello world") == [31373, 995]
    return enc


def hf_gpt2():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    bpe = models.BPE.from_file(os.path.join(DATA, "vocab.json"), os.path.join(DATA, "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _graphic(c):
    return 0x21 <= ord(c) <= 0x7E


def safe_chunks(text, target):
    chunks, start, n = [], 0, len(text)
    # Works on characters; cut points are ASCII so the byte and char rules coincide.
    while n - start > target:
        i = start + target
        cut = None
        while True:
            nl = text.find("\n", i)
            if nl < 0:
                break
            if nl > start and nl + 1 < n and _graphic(text[nl - 1]) and _graphic(text[nl + 1]):
                cut = nl + 1
                break
            i = nl + 1
        if cut is None:
            break
        chunks.append(text[start:cut])
        start = cut
    if start < n or not chunks:
        chunks.append(text[start:])
    return chunks


def hf_train(chunks, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(chunks, trainer)
    return tok


def hf_merges(tok):
    """Merge rules of a trained HF tokenizer as 'left right' strings."""
    model = json.loads(tok.to_str())["model"]
    return [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def our_binary():
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "gpt-tokenizer", "--example", "tokenizer_bench"],
        cwd=ROOT, check=True,
    )
    return os.path.join(ROOT, "target", "release", "examples", "tokenizer_bench")


def read_ids(path):
    import array

    a = array.array("I")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a.tolist()
