"""llama.cpp side of `gpt bench generate --vs-llamacpp`, through the `llama-cpp-python` package.

Two jobs:
- `convert`: turns the checkpoint directory the Rust side wrote (HF GPT-2 layout: config.json,
  model.safetensors, vocab.json, merges.txt) into GGUF files with llama.cpp's own
  `convert_hf_to_gguf.py` (from the llama-cpp-python source distribution, see
  `bench/setup_llamacpp.sh`), one per `--outtype` (f32, f16, q8_0), skipping files already there.
- `run`: loads one GGUF file with `llama_cpp.Llama` on the given threads and prints one JSON
  object: batch-1 greedy decode tokens/s after `--prompt`, prefill tokens/s of `--prefill-prompt`
  (one `eval` of the whole prompt, best of `--reps`), the greedy ids, and this process's peak RSS.

Decode time: the `eval` of each new token plus the argmax over its logits, summed over the new
tokens after the first (the first token's logits come from the prompt's `eval`). Run one process
per file and repetition so each gets a fresh process (the Rust side alternates them with ours).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def convert(a):
    os.makedirs(a.out_dir, exist_ok=True)
    out = {}
    for t in a.outtypes.split(","):
        path = os.path.join(a.out_dir, f"model-{t}.gguf")
        if not os.path.exists(path):
            tmp = path + ".tmp"
            r = subprocess.run(
                [sys.executable, a.converter, a.model, "--outtype", t, "--outfile", tmp],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                sys.exit(f"convert_hf_to_gguf.py --outtype {t} failed:\n{r.stderr[-3000:]}")
            os.replace(tmp, path)
        out[t] = path
    print(json.dumps(out))


def peak_rss_mb():
    """This process's peak resident memory (VmHWM). Not ru_maxrss: that survives exec, so a
    process started by a large one reports the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(a):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        model_path=a.gguf,
        n_ctx=a.n_ctx,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_batch=512,
        verbose=False,
    )
    prompt = json.loads(a.prompt)
    prefill_prompt = json.loads(a.prefill_prompt)

    n_vocab = llm.n_vocab()

    def last_argmax():
        # The last evaluated token's logits, read from llama.cpp (the package copies logits
        # into `scores` only with logits_all).
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def greedy(n):
        llm.reset()
        llm.eval(prompt)
        ids = [last_argmax()]
        t0 = time.perf_counter()
        for _ in range(n - 1):
            llm.eval([ids[-1]])
            ids.append(last_argmax())
        return time.perf_counter() - t0, ids

    greedy(4)  # warm-up
    best, ids = min((greedy(a.new_tokens) for _ in range(a.reps)), key=lambda r: r[0])
    tp = []
    for _ in range(a.reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prefill_prompt)
        tp.append(time.perf_counter() - t0)
    res = {
        "decode_tokens_per_sec": (a.new_tokens - 1) / best,
        "prefill_tokens_per_sec": len(prefill_prompt) / min(tp),
        "ids": ids,
        "peak_rss_mb": peak_rss_mb(),
        "file_mb": os.path.getsize(a.gguf) / (1 << 20),
    }
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--model", required=True)
    c.add_argument("--converter", required=True, help="llama.cpp's convert_hf_to_gguf.py")
    c.add_argument("--outtypes", default="f32,f16,q8_0")
    c.add_argument("--out-dir", required=True)
    r = sub.add_parser("run")
    r.add_argument("--gguf", required=True)
    r.add_argument("--threads", type=int, required=True)
    r.add_argument("--n-ctx", type=int, default=1024)
    r.add_argument("--new-tokens", type=int, default=128)
    r.add_argument("--reps", type=int, default=1)
    r.add_argument("--prompt", required=True, help="JSON list of ids")
    r.add_argument("--prefill-prompt", required=True, help="JSON list of ids")
    a = ap.parse_args()
    convert(a) if a.cmd == "convert" else run(a)


if __name__ == "__main__":
    main()
