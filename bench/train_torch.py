#!/usr/bin/env python3
"""PyTorch side of `gpt bench train --vs-torch`: the same GPT (pre-LN GPT-2 architecture,
tied head, tanh GELU, learned positions, the preset's dropout), the same batch shape, AdamW
(0.9, 0.95, weight decay 0.1 on matrices), gradient clipping 1.0, eager f32 (or, with
--autocast, the forward and loss under torch.autocast("cpu", dtype=torch.bfloat16): PyTorch's
mixed precision with f32 master weights), the same threads.
Random token windows (the data loader is not what is measured). Prints one JSON line with the
median step time, tokens/s and peak RSS.

Usage: python bench/train_torch.py --vocab V --n-layer L --n-head H --n-embd C --block-size T
       --batch-size B --dropout P --steps S --threads N [--autocast]
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, h, p):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.drop(self.c_proj(y))
        x = x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))
        return x


class GPT(nn.Module):
    def __init__(self, v, t, l, h, c, p):
        super().__init__()
        self.wte = nn.Embedding(v, c)
        self.wpe = nn.Embedding(t, c)
        self.drop = nn.Dropout(p)
        self.h = nn.ModuleList(Block(c, h, p) for _ in range(l))
        self.ln_f = nn.LayerNorm(c)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(t)))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    for k in ["vocab", "n-layer", "n-head", "n-embd", "block-size", "batch-size", "steps", "threads"]:
        ap.add_argument(f"--{k}", type=int, required=True)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast for forward and loss")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(a.vocab, a.block_size, a.n_layer, a.n_head, a.n_embd, a.dropout)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95))
    times = []
    for s in range(a.steps + 2):
        x = torch.randint(0, a.vocab, (a.batch_size, a.block_size))
        y = torch.randint(0, a.vocab, (a.batch_size, a.block_size))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= 2:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step_s": med, "tokens_per_sec": a.batch_size * a.block_size / med, "peak_rss_mb": rss_mb}))


if __name__ == "__main__":
    main()
