#!/usr/bin/env python3
"""PyTorch reference fixtures for the elementwise kernels (tests/torch_elementwise.rs).

For each kernel: seeded float32 inputs at odd shapes (N=7 rows, C=13 channels, V=11 tokens), the
forward output, and the input/parameter gradients of L = sum(out * dout) from autograd with a
random upstream gradient `dout`. Everything is saved as float32 (token ids as int64) to
tests/fixtures/elementwise/<kernel>.safetensors.

The forward and backward run in float64 on the float32 inputs and are rounded once to float32:
the fixture is then the exact answer for those inputs, so the Rust side is held to its own
rounding (~1e-7 relative), not to PyTorch's float32 rounding on top of it. Dropout is random and
is checked statistically in the unit tests instead.

Run from the repository root with the reference environment:
    ~/.cache/gpt-refenv/bin/python tools/fixtures_elementwise.py
"""

import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT_DIR = os.path.join("tests", "fixtures", "elementwise")
N, C, V = 7, 13, 11


def randn(gen, *shape, std=1.0, mean=0.0):
    """Seeded float32 normals."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).contiguous()


def run(fn, inputs, gen):
    """Forward `fn` in float64 on float32 `inputs` (dict name -> tensor; grads for float ones),
    backward with a random float32 `dout`. Returns dict of float32 tensors:
    inputs, `out`, `dout`, and `d<name>` for every float input."""
    leaves = {k: v.double().requires_grad_(True) for k, v in inputs.items() if v.is_floating_point()}
    args = {k: leaves.get(k, v) for k, v in inputs.items()}
    out = fn(**args)
    dout = randn(gen, *out.shape)
    out.backward(dout.double())
    result = {k: v.contiguous() for k, v in inputs.items()}
    result["out"] = out.detach().float().contiguous()
    result["dout"] = dout
    for k, v in leaves.items():
        result["d" + k] = v.grad.float().contiguous()
    return result


def sinusoidal(t, c):
    """Annotated Transformer / PyTorch tutorial positional encoding, in float64; for odd C the
    last column is a sine (their code assumes even C)."""
    position = torch.arange(t, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, c, 2, dtype=torch.float64) * -(math.log(10000.0) / c))
    pe = torch.zeros(t, c, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term[: c // 2])
    return pe.float().contiguous()


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    fixtures = {}

    # Embedding with repeated ids (3 and 0 repeat; some rows of the table are never used).
    ids = torch.tensor([3, 0, 3, 10, 7, 3, 0], dtype=torch.int64)
    fixtures["embedding"] = run(
        lambda ids, table: F.embedding(ids, table), {"ids": ids, "table": randn(gen, V, C)}, gen
    )

    # LayerNorm with non-trivial affine parameters and offset inputs.
    fixtures["layernorm"] = run(
        lambda inp, weight, bias: F.layer_norm(inp, (C,), weight, bias, eps=1e-5),
        {
            "inp": randn(gen, N, C, std=2.0, mean=0.5),
            "weight": randn(gen, C, std=0.5, mean=1.0),
            "bias": randn(gen, C, std=0.5),
        },
        gen,
    )

    # GELU (tanh form) over a wide range, including the far negative tail.
    fixtures["gelu"] = run(
        lambda inp: F.gelu(inp, approximate="tanh"), {"inp": randn(gen, N, C, std=3.0)}, gen
    )
    fixtures["relu"] = run(lambda inp: F.relu(inp), {"inp": randn(gen, N, C)}, gen)

    # Softmax and log-softmax along the last axis, with large logits.
    x = randn(gen, N, C, std=4.0)
    fixtures["softmax"] = run(lambda inp: torch.softmax(inp, -1), {"inp": x}, gen)
    fixtures["log_softmax"] = run(lambda inp: torch.log_softmax(inp, -1), {"inp": x}, gen)

    fixtures["residual"] = run(
        lambda a, b: a + b, {"a": randn(gen, N, C), "b": randn(gen, N, C)}, gen
    )
    scale = torch.tensor([0.375], dtype=torch.float32)
    fixtures["scale"] = run(lambda inp: inp * 0.375, {"inp": randn(gen, N, C)}, gen)
    fixtures["scale"]["s"] = scale

    fixtures["sinusoidal"] = {
        "pe_7x13": sinusoidal(7, C),
        "pe_64x16": sinusoidal(64, 16),
    }

    # Linear layers in both weight layouts (nn.Linear (OC, IC) and GPT-2 Conv1D (IC, OC)), and
    # matrix products in all four transpose combinations (M=7, K=13, N=5; `a` stored (K, M) when
    # transposed, `b` stored (N, K) when transposed). Appended last so earlier fixtures keep
    # their random draws.
    oc = 5
    fixtures["linear_outin"] = run(
        lambda inp, weight, bias: F.linear(inp, weight, bias),
        {"inp": randn(gen, N, C), "weight": randn(gen, oc, C), "bias": randn(gen, oc)},
        gen,
    )
    fixtures["linear_inout"] = run(
        lambda inp, weight, bias: inp @ weight + bias,
        {"inp": randn(gen, N, C), "weight": randn(gen, C, oc), "bias": randn(gen, oc)},
        gen,
    )
    for ta in (False, True):
        for tb in (False, True):
            a = randn(gen, C, N) if ta else randn(gen, N, C)
            b = randn(gen, oc, C) if tb else randn(gen, C, oc)
            fixtures[f"matmul_{'t' if ta else 'n'}{'t' if tb else 'n'}"] = run(
                lambda a, b, ta=ta, tb=tb: (a.t() if ta else a) @ (b.t() if tb else b),
                {"a": a, "b": b},
                gen,
            )

    for name, tensors in fixtures.items():
        path = os.path.join(OUT_DIR, f"{name}.safetensors")
        save_file(tensors, path, metadata={"script": "tools/fixtures_elementwise.py", "torch": torch.__version__})
        print(f"{path}: {', '.join(f'{k}{list(v.shape)}' for k, v in sorted(tensors.items()))}")


if __name__ == "__main__":
    main()
