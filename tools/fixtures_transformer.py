#!/usr/bin/env python3
"""Fixtures for the encoder-decoder Transformer: a tiny model written independently in PyTorch
with `gpt`'s parameter names and layouts (src/model/transformer.rs), on a padded batch whose
sources and targets have unequal lengths.

For each variant (post-LN as the paper, pre-LN) it writes
tests/fixtures/transformer/{post,pre}.safetensors with:
  param.<name>      initial parameters (f32, random, non-trivial scales)
  src, src_mask     (B, S) source ids (EOS appended, pad 0) and mask
  tgt_in, tgt_mask  (B, T) decoder inputs (BOS + target) and mask
  tgt_out           (B, T) targets (target + EOS, -100 on padding)
  loss              label-smoothed (0.1) mean cross-entropy over real target tokens
  grad.<name>       every parameter gradient
computed in float64 from the f32 parameters.

Layout: embed.weight (V, C) shared by both embeddings (scaled by sqrt(C)) and the generator;
sinusoidal positions pe[p, 2i] = sin(p / 10000^(2i/C)), pe[p, 2i+1] = cos(...); linear weights
in (in, out) orientation: attn.c_attn (C, 3C), attn.c_proj (C, C), crossattention.q_attn (C, C),
crossattention.c_attn (C, 2C) (keys | values of the memory), crossattention.c_proj,
mlp.c_fc (C, F), mlp.c_proj (F, C); LayerNorms ln_1, ln_cross_attn, ln_2 (eps 1e-5), ReLU.

Run with the reference environment: ~/.cache/gpt-refenv/bin/python tools/fixtures_transformer.py
"""
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "transformer")
V, C, NH, FF, L = 19, 16, 4, 24, 2
HS = C // NH
PAD, BOS, EOS = 0, 1, 2
EPS = 1e-5
SMOOTHING = 0.1
PAIRS = [
    ([5, 6, 7, 8, 9], [10, 3]),
    ([10, 3], [4, 4, 11, 12, 13, 14]),
    ([4, 4, 11, 12], [5, 6, 7]),
]


def layout(pre):
    shapes = {"embed.weight": (V, C)}
    for stack, dec in (("encoder", False), ("decoder", True)):
        for i in range(L):
            p = f"{stack}.h.{i}"
            shapes[f"{p}.ln_1.weight"] = (C,)
            shapes[f"{p}.ln_1.bias"] = (C,)
            shapes[f"{p}.attn.c_attn.weight"] = (C, 3 * C)
            shapes[f"{p}.attn.c_attn.bias"] = (3 * C,)
            shapes[f"{p}.attn.c_proj.weight"] = (C, C)
            shapes[f"{p}.attn.c_proj.bias"] = (C,)
            if dec:
                shapes[f"{p}.ln_cross_attn.weight"] = (C,)
                shapes[f"{p}.ln_cross_attn.bias"] = (C,)
                shapes[f"{p}.crossattention.q_attn.weight"] = (C, C)
                shapes[f"{p}.crossattention.q_attn.bias"] = (C,)
                shapes[f"{p}.crossattention.c_attn.weight"] = (C, 2 * C)
                shapes[f"{p}.crossattention.c_attn.bias"] = (2 * C,)
                shapes[f"{p}.crossattention.c_proj.weight"] = (C, C)
                shapes[f"{p}.crossattention.c_proj.bias"] = (C,)
            shapes[f"{p}.ln_2.weight"] = (C,)
            shapes[f"{p}.ln_2.bias"] = (C,)
            shapes[f"{p}.mlp.c_fc.weight"] = (C, FF)
            shapes[f"{p}.mlp.c_fc.bias"] = (FF,)
            shapes[f"{p}.mlp.c_proj.weight"] = (FF, C)
            shapes[f"{p}.mlp.c_proj.bias"] = (C,)
        if pre:
            shapes[f"{stack}.ln_f.weight"] = (C,)
            shapes[f"{stack}.ln_f.bias"] = (C,)
    return shapes


def make_params(g, pre):
    p = {}
    for name, shape in layout(pre).items():
        if "ln" in name and name.endswith(".weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.05 * torch.randn(shape, generator=g)
        elif name == "embed.weight":
            t = C ** -0.5 * torch.randn(shape, generator=g)
        else:
            t = (1.0 / math.sqrt(shape[0])) * torch.randn(shape, generator=g)
        p[name] = t.float()
    return p


def batch():
    b = len(PAIRS)
    s = max(len(x) for x, _ in PAIRS) + 1
    t = max(len(y) for _, y in PAIRS) + 1
    src = torch.full((b, s), PAD, dtype=torch.int64)
    src_mask = torch.zeros((b, s), dtype=torch.uint8)
    tgt_in = torch.full((b, t), PAD, dtype=torch.int64)
    tgt_mask = torch.zeros((b, t), dtype=torch.uint8)
    tgt_out = torch.full((b, t), -100, dtype=torch.int64)
    for i, (x, y) in enumerate(PAIRS):
        src[i, : len(x)] = torch.tensor(x)
        src[i, len(x)] = EOS
        src_mask[i, : len(x) + 1] = 1
        tgt_in[i, 0] = BOS
        tgt_in[i, 1 : len(y) + 1] = torch.tensor(y)
        tgt_mask[i, : len(y) + 1] = 1
        tgt_out[i, : len(y)] = torch.tensor(y)
        tgt_out[i, len(y)] = EOS
    return src, src_mask, tgt_in, tgt_mask, tgt_out


def positions(t):
    pos = torch.arange(t, dtype=torch.float64)[:, None]
    i = torch.arange(C, dtype=torch.int64)
    inv = torch.exp(-(2 * (i // 2)).double() * math.log(10000.0) / C)
    ang = pos * inv[None, :]
    return torch.where(i % 2 == 0, torch.sin(ang), torch.cos(ang))


def ln(p, name, x):
    return F.layer_norm(x, (C,), p[f"{name}.weight"], p[f"{name}.bias"], EPS)


def heads(x):  # (B, T, C) -> (B, NH, T, HS)
    b, t, _ = x.shape
    return x.view(b, t, NH, HS).transpose(1, 2)


def attend(q, k, v, key_mask, causal):
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    q, k, v = heads(q), heads(k), heads(v)
    att = q @ k.transpose(-1, -2) / math.sqrt(HS)  # (B, NH, Tq, Tk)
    allow = key_mask.bool()[:, None, None, :].expand(b, NH, tq, tk)
    if causal:
        allow = allow & torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    att = att.masked_fill(~allow, float("-inf")).softmax(-1)
    return (att @ v).transpose(1, 2).reshape(b, tq, C)


def lin(p, name, x):
    return x @ p[f"{name}.weight"] + p[f"{name}.bias"]


def self_attn(p, pre_, x, key_mask, causal):
    q, k, v = lin(p, f"{pre_}.attn.c_attn", x).split(C, dim=-1)
    return lin(p, f"{pre_}.attn.c_proj", attend(q, k, v, key_mask, causal))


def cross_attn(p, pre_, x, mem, mem_mask):
    q = lin(p, f"{pre_}.crossattention.q_attn", x)
    k, v = lin(p, f"{pre_}.crossattention.c_attn", mem).split(C, dim=-1)
    return lin(p, f"{pre_}.crossattention.c_proj", attend(q, k, v, mem_mask, False))


def mlp(p, pre_, x):
    return lin(p, f"{pre_}.mlp.c_proj", torch.relu(lin(p, f"{pre_}.mlp.c_fc", x)))


def block(p, pre_, x, key_mask, causal, mem, mem_mask, pre):
    if pre:
        h = x + self_attn(p, pre_, ln(p, f"{pre_}.ln_1", x), key_mask, causal)
        if mem is not None:
            h = h + cross_attn(p, pre_, ln(p, f"{pre_}.ln_cross_attn", h), mem, mem_mask)
        return h + mlp(p, pre_, ln(p, f"{pre_}.ln_2", h))
    h = ln(p, f"{pre_}.ln_1", x + self_attn(p, pre_, x, key_mask, causal))
    if mem is not None:
        h = ln(p, f"{pre_}.ln_cross_attn", h + cross_attn(p, pre_, h, mem, mem_mask))
    return ln(p, f"{pre_}.ln_2", h + mlp(p, pre_, h))


def embed(p, ids):
    return math.sqrt(C) * p["embed.weight"][ids] + positions(ids.shape[1])[None]


def loss_fn(p, pre, src, src_mask, tgt_in, tgt_mask, tgt_out):
    x = embed(p, src)
    for i in range(L):
        x = block(p, f"encoder.h.{i}", x, src_mask, False, None, None, pre)
    mem = ln(p, "encoder.ln_f", x) if pre else x
    y = embed(p, tgt_in)
    for i in range(L):
        y = block(p, f"decoder.h.{i}", y, tgt_mask, True, mem, src_mask, pre)
    if pre:
        y = ln(p, "decoder.ln_f", y)
    logits = y @ p["embed.weight"].T
    return F.cross_entropy(
        logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=-100, label_smoothing=SMOOTHING
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, pre in (("post", False), ("pre", True)):
        g = torch.Generator().manual_seed(1234 if pre else 4321)
        params = make_params(g, pre)
        p64 = {k: v.double().requires_grad_(True) for k, v in params.items()}
        src, src_mask, tgt_in, tgt_mask, tgt_out = batch()
        loss = loss_fn(p64, pre, src, src_mask, tgt_in, tgt_mask, tgt_out)
        loss.backward()
        out = {f"param.{k}": v.contiguous() for k, v in params.items()}
        out.update({f"grad.{k}": v.grad.float().contiguous() for k, v in p64.items()})
        out.update(
            src=src, src_mask=src_mask, tgt_in=tgt_in, tgt_mask=tgt_mask, tgt_out=tgt_out,
            loss=loss.detach().reshape(1),
        )
        save_file(out, os.path.join(OUT, f"{name}.safetensors"))
        print(name, "loss", loss.item())


if __name__ == "__main__":
    main()
