#!/usr/bin/env python3
"""PyTorch side of `gpt bench kernels --vs-torch`: the same operations at the same shapes, on the
same number of threads, timed the same way (median over repetitions after a warm-up).

Prints one JSON object per line: {"name": ..., "median_ms": ...}. Names match the Rust side.
Usage: python bench/kernels_torch.py --threads N --reps R
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timeit(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = 1024
    out = []

    for ic, oc in [(768, 2304), (768, 3072), (3072, 768), (768, 50304)]:
        x = torch.randn(n, ic)
        w = torch.randn(ic, oc) * 0.02
        dy = torch.randn(n, oc)
        tag = f"{n}x{ic}x{oc}"
        out.append((f"matmul {tag} forward", timeit(lambda: torch.mm(x, w), args.reps)))
        out.append((f"matmul {tag} dinp", timeit(lambda: torch.mm(dy, w.t()), args.reps)))
        out.append((f"matmul {tag} dweight", timeit(lambda: torch.mm(x.t(), dy), args.reps)))

    b, h, t, d = 8, 12, 128, 64
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    do = torch.randn(b, h, t, d)

    def attn():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(do)

    out.append(("attention B8 H12 T128 d64 causal fwd+bwd", timeit(attn, args.reps)))

    x = torch.randn(n, 768, requires_grad=True)
    g = torch.ones(768, requires_grad=True)
    bb = torch.zeros(768, requires_grad=True)
    dy = torch.randn(n, 768)
    out.append(("layernorm 1024x768 fwd+bwd",
                timeit(lambda: F.layer_norm(x, (768,), g, bb, 1e-5).backward(dy), args.reps)))

    x = torch.randn(n, 3072, requires_grad=True)
    dy = torch.randn(n, 3072)
    out.append(("gelu 1024x3072 fwd+bwd",
                timeit(lambda: F.gelu(x, approximate="tanh").backward(dy), args.reps)))

    logits = torch.randn(n, 50257, requires_grad=True)
    targets = torch.randint(0, 50257, (n,))
    out.append(("crossentropy 1024x50257 fwd+bwd",
                timeit(lambda: F.cross_entropy(logits, targets).backward(), args.reps)))

    for name, ms in out:
        print(json.dumps({"name": name, "median_ms": ms}), flush=True)


if __name__ == "__main__":
    main()
