#!/usr/bin/env python3
"""Fixtures for whole-model tests: a tiny GPT (pre-LN GPT-2 style and post-LN GPT-1 style) built
independently in PyTorch, with the same parameter names and layouts as `gpt`'s.

For each variant it writes tests/fixtures/model/{pre,post}.safetensors with:
  param.<name>      the initial parameters (random, non-trivial scales)
  ids, targets      a batch (B=2, T=7; one target set to -100 = ignored)
  logits, loss      forward results
  grad.<name>       every parameter gradient of the mean cross-entropy
  ids.<s>, targets.<s>, train.loss   a 20-step AdamW trajectory (lr 1e-2, betas
                    (0.9, 0.95), eps 1e-8, weight decay 0.1 on 2-D tensors only, grad clip 1.0)

Run with the reference environment: ~/.cache/gpt-refenv/bin/python tools/fixtures_model.py
"""
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "model")
V, NCTX, L, NH, C, B, T = 17, 9, 2, 3, 15, 2, 7
HS = C // NH
STEPS = 20


def make_params(g, pre):
    p = {}

    def n(name, *shape, std=0.3, mean=0.0):
        p[name] = (mean + std * torch.randn(*shape, generator=g)).float()

    n("wte.weight", V, C, std=0.5)
    n("wpe.weight", NCTX, C, std=0.3)
    for i in range(L):
        h = f"h.{i}"
        n(f"{h}.ln_1.weight", C, std=0.2, mean=1.0)
        n(f"{h}.ln_1.bias", C, std=0.2)
        n(f"{h}.attn.c_attn.weight", C, 3 * C, std=0.3)
        n(f"{h}.attn.c_attn.bias", 3 * C, std=0.1)
        n(f"{h}.attn.c_proj.weight", C, C, std=0.3)
        n(f"{h}.attn.c_proj.bias", C, std=0.1)
        n(f"{h}.ln_2.weight", C, std=0.2, mean=1.0)
        n(f"{h}.ln_2.bias", C, std=0.2)
        n(f"{h}.mlp.c_fc.weight", C, 4 * C, std=0.3)
        n(f"{h}.mlp.c_fc.bias", 4 * C, std=0.1)
        n(f"{h}.mlp.c_proj.weight", 4 * C, C, std=0.2)
        n(f"{h}.mlp.c_proj.bias", C, std=0.1)
    if pre:
        n("ln_f.weight", C, std=0.2, mean=1.0)
        n("ln_f.bias", C, std=0.2)
    return p


def forward(p, ids, pre):
    b, t = ids.shape
    x = p["wte.weight"][ids] + p["wpe.weight"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).tril()

    def ln(x, name):
        return F.layer_norm(x, (C,), p[f"{name}.weight"], p[f"{name}.bias"], 1e-5)

    def attn(x, h):
        qkv = x @ p[f"{h}.attn.c_attn.weight"] + p[f"{h}.attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (z.view(b, t, NH, HS).transpose(1, 2) for z in (q, k, v))  # (B, NH, T, HS)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, C)
        return y @ p[f"{h}.attn.c_proj.weight"] + p[f"{h}.attn.c_proj.bias"]

    def mlp(x, h):
        y = F.gelu(x @ p[f"{h}.mlp.c_fc.weight"] + p[f"{h}.mlp.c_fc.bias"], approximate="tanh")
        return y @ p[f"{h}.mlp.c_proj.weight"] + p[f"{h}.mlp.c_proj.bias"]

    for i in range(L):
        h = f"h.{i}"
        if pre:
            x = x + attn(ln(x, f"{h}.ln_1"), h)
            x = x + mlp(ln(x, f"{h}.ln_2"), h)
        else:
            x = ln(x + attn(x, h), f"{h}.ln_1")
            x = ln(x + mlp(x, h), f"{h}.ln_2")
    if pre:
        x = ln(x, "ln_f")
    return x @ p["wte.weight"].t()


def batch(g):
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[1, 3] = -100
    return ids, targets


def variant(pre, seed):
    g = torch.Generator().manual_seed(seed)
    p0 = make_params(g, pre)
    out = {f"param.{k}": v.clone() for k, v in p0.items()}
    ids, targets = batch(g)
    p = {k: v.double().requires_grad_(True) for k, v in p0.items()}
    logits = forward(p, ids, pre)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
    loss.backward()
    out.update(ids=ids, targets=targets, logits=logits.detach(), loss=loss.detach().reshape(1))
    out.update({f"grad.{k}": v.grad.clone() for k, v in p.items()})

    # 20 AdamW steps on fresh batches.
    p = {k: v.double().requires_grad_(True) for k, v in p0.items()}
    decay = [v for v in p.values() if v.dim() >= 2]
    no_decay = [v for v in p.values() if v.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
    )
    losses = []
    for s in range(STEPS):
        ids, targets = batch(g)
        out[f"ids.{s}"] = ids
        out[f"targets.{s}"] = targets
        opt.zero_grad()
        loss = F.cross_entropy(forward(p, ids, pre).view(-1, V), targets.view(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), 1.0)
        opt.step()
        losses.append(loss.item())
    out["train.loss"] = torch.tensor(losses, dtype=torch.float32)
    out = {k: (v.contiguous().float() if v.is_floating_point() else v.contiguous()) for k, v in out.items()}
    save_file(out, os.path.join(OUT, ("pre" if pre else "post") + ".safetensors"))
    print(("pre" if pre else "post"), "loss", out["loss"].item(), "final", losses[-1])


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    variant(True, 1234)
    variant(False, 4321)
