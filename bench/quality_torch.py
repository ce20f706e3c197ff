#!/usr/bin/env python3
"""PyTorch side of the quality check: nanoGPT's CPU recipe for shakespeare_char (4 layers,
4 heads, 128 wide, context 64, batch 12, 2000 iterations, lr 1e-3 warmup 100 then cosine to
1e-4, AdamW (0.9, 0.99) with weight decay 0.1 on matrices, clip 1.0, dropout 0) on the SAME
token files `gpt` trains on (a `gpt prepare` / `gpt train` data directory), with the same
validation estimate (mean loss of 200 random batches of 12 x 64 windows).

Usage: python bench/quality_torch.py DATA_DIR [--threads N]
Prints the final validation loss as JSON.
"""
import argparse
import json
import math
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

L, H, C, T, B, ITERS = 4, 4, 128, 64, 12, 2000
LR, MIN_LR, WARMUP = 1e-3, 1e-4, 100


def read_tokens(path):
    raw = open(path, "rb").read()
    magic, version, width, count = raw[:8], *struct.unpack("<IIQ", raw[8:24])
    assert magic == b"GPTTOKS\0" and version == 1, path
    dtype = np.uint16 if width == 2 else np.uint32
    return torch.from_numpy(np.frombuffer(raw[24:], dtype=dtype).astype(np.int64))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, H, c // H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def batch(data, g):
    ix = torch.randint(len(data) - T, (B,), generator=g)
    return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + 1 + T] for i in ix])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    train, val = read_tokens(f"{a.data}/train.bin"), read_tokens(f"{a.data}/val.bin")
    vocab = json.load(open(f"{a.data}/prepare.json"))["vocab_size"]
    model = GPT(vocab)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(1337)
    t0 = time.time()
    for it in range(ITERS):
        lr = LR * (it + 1) / WARMUP if it < WARMUP else MIN_LR + 0.5 * (1 + math.cos(math.pi * (it - WARMUP) / (ITERS - WARMUP))) * (LR - MIN_LR)
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, y = batch(train, g)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train_s = time.time() - t0
    model.eval()
    gv = torch.Generator().manual_seed(7)
    with torch.no_grad():
        val_loss = sum(model(*batch(val, gv)).item() for _ in range(200)) / 200
    print(json.dumps({"val_loss": val_loss, "train_loss": loss.item(), "train_seconds": train_s}))


if __name__ == "__main__":
    main()
