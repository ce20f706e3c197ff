#!/usr/bin/env python3
"""PyTorch reference for `gpt finetune`: GPT-1 fine-tuning (Radford et al. 2018, §3.2–3.3) of
one of our base checkpoints (a Hugging Face GPT-2 directory) with the same recipe, written
independently of our code on `transformers`' GPT2Model and HF `tokenizers`.

The recipe, as `gpt finetune` documents it:
  - the tokenizer gets three special tokens appended (start, delim, extract), the embedding
    three new rows drawn N(0, 0.02); the transforms are GPT-1 Figure 1, over-long inputs cut per
    segment ("while too long, drop the last token of the longer segment; ties: the later one");
  - head: dropout 0.1 on the final hidden state at the extract token, then a bias-free linear
    layer (N(0, 0.02)); similar sums the two orders' states; choice scores one scalar per answer
    and takes a softmax over the answers;
  - L3 = L2 + λ·L1 (L1: the LM cross-entropy over every real next token of the batch);
  - AdamW (0.9, 0.999, 1e-8), weight decay 0.01 on tensors with ≥ 2 dimensions, clip 1.0,
    lr linear from 0 to the peak over ⌈0.002·T⌉ updates then linearly to 0 at T, dropout 0.1
    (embedding and residual; attention probabilities 0, as ours), batches right-padded to their
    longest sequence, a fresh shuffle per epoch.

Prints one JSON line per step with --json ({"step", "loss", "examples", "step_s"}) and a final
{"steps", "train_s", "tests": {path: {"accuracy", "n"}}, ...}.

  ~/.cache/gpt-refenv/bin/python bench/finetune_torch.py --model BASE --task classify \
      --train train.jsonl --test test.jsonl [--aux-lm 0.5] [--threads 2]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer

SPECIALS = ["<|start|>", "<|delim|>", "<|extract|>"]
FIELDS = {
    "classify": ["text"],
    "entail": ["premise", "hypothesis"],
    "similar": ["sentence1", "sentence2"],
    "choice": ["question", "choices"],
}


def read(path, task):
    recs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                recs.append(r)
    for i, r in enumerate(recs):
        for k in FIELDS[task] + ["label"]:
            if k not in r:
                sys.exit(f"{path}:{i + 1}: no `{k}` field (task {task})")
    return recs


def cut(segs, budget):
    segs = [list(s) for s in segs]
    while sum(len(s) for s in segs) > budget:
        i = max(range(len(segs)), key=lambda j: (len(segs[j]), j))
        segs[i].pop()
    return segs


class Transform:
    def __init__(self, tok, specials, n_ctx):
        self.tok, self.n_ctx = tok, n_ctx
        self.start, self.delim, self.extract = specials

    def enc(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def single(self, x):
        (x,) = cut([x], self.n_ctx - 2)
        return [self.start] + x + [self.extract]

    def pair(self, a, b):
        a, b = cut([a, b], self.n_ctx - 3)
        return [self.start] + a + [self.delim] + b + [self.extract]

    def __call__(self, task, r):
        if task == "classify":
            return [self.single(self.enc(r["text"]))]
        if task == "entail":
            return [self.pair(self.enc(r["premise"]), self.enc(r["hypothesis"]))]
        if task == "similar":
            a, b = self.enc(r["sentence1"]), self.enc(r["sentence2"])
            return [self.pair(a, b), self.pair(b, a)]
        q = self.enc(r["question"])
        return [self.pair(q, self.enc(c)) for c in r["choices"]]


def label_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


class Finetuner(nn.Module):
    def __init__(self, base, task, n_out, dropout, from_scratch, seed):
        super().__init__()
        cfg = transformers.GPT2Config.from_pretrained(base)
        cfg.resid_pdrop = cfg.embd_pdrop = dropout
        cfg.attn_pdrop = 0.0
        torch.manual_seed(seed)
        if from_scratch:
            self.trunk = transformers.GPT2Model(cfg)
        else:
            self.trunk = transformers.GPT2Model.from_pretrained(base, config=cfg, torch_dtype=torch.float32)
        self.task = task
        self.drop = nn.Dropout(dropout)
        self.score = nn.Linear(cfg.n_embd, n_out, bias=False)
        nn.init.normal_(self.score.weight, 0.0, 0.02)

    def grow(self, specials):
        """Appends rows so every special id has one, each special's row drawn N(0, 0.02)."""
        wte = self.trunk.wte.weight
        v0, c = wte.shape
        n = max(v0, max(specials) + 1)
        table = nn.Embedding(n, c)
        with torch.no_grad():
            table.weight[:v0].copy_(wte.detach())
            for i in specials:
                table.weight[i].normal_(0.0, 0.02)
        self.trunk.wte = table
        self.trunk.config.vocab_size = n

    def forward(self, ids, lens, per, lm):
        # Right padding under a causal mask: no real position sees a padding token, so no
        # attention mask is needed (and SDPA keeps its causal fast path).
        h = self.trunk(input_ids=ids).last_hidden_state  # (R, T, C)
        ext = h[torch.arange(ids.shape[0]), lens - 1]
        n = ids.shape[0] // per
        if self.task == "similar":
            ext = ext.view(n, per, -1).sum(1)
        scores = self.score(self.drop(ext))
        if self.task == "choice":
            scores = scores.view(n, per)
        logits = h @ self.trunk.wte.weight.t() if lm else None
        return scores, logits


def batch(examples, pad):
    rows = [s for ex in examples for s in ex[0]]
    t = max(len(s) for s in rows)
    ids = torch.tensor([s + [pad] * (t - len(s)) for s in rows])
    lens = torch.tensor([len(s) for s in rows])
    targets = torch.full((len(rows), t), -100)
    for i, s in enumerate(rows):
        targets[i, : len(s) - 1] = torch.tensor(s[1:])
    y = torch.tensor([ex[1] for ex in examples])
    return ids, lens, targets, y, len(examples[0][0])


def lr_at(step, peak, warmup, total):
    if step < warmup:
        return peak * step / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def evaluate(model, data, pad, bs):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data), bs):
            chunk = data[i : i + bs]
            ids, lens, _, y, per = batch(chunk, pad)
            scores, _ = model(ids, lens, per, False)
            correct += (scores.argmax(-1) == y).sum().item()
    model.train()
    return correct / max(1, len(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True, choices=list(FIELDS))
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", action="append", default=[], help="labelled records to score at the end (repeatable)")
    ap.add_argument("--aux-lm", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=6.25e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--from-scratch", action="store_true")
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast for the forward and the losses")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    random.seed(a.seed)

    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    v0 = transformers.GPT2Config.from_pretrained(a.model).vocab_size
    if tok.get_vocab_size() > v0:
        sys.exit(f"{a.model}: the tokenizer has more ids than the model")
    # As `gpt finetune`: the specials follow the tokenizer's last id (inside the model's table
    # when its vocabulary was padded past the tokenizer's).
    specials = [tok.get_vocab_size() + i for i in range(len(SPECIALS))]
    train_recs = read(a.train, a.task)
    if a.task == "choice":
        labels, n_out = None, 1
    else:
        labels = sorted({r["label"] for r in train_recs}, key=label_key)
        n_out = len(labels)
    n_ctx = transformers.GPT2Config.from_pretrained(a.model).n_positions
    tf = Transform(tok, specials, n_ctx)

    def encode(recs):
        return [(tf(a.task, r), r["label"] if labels is None else labels.index(r["label"])) for r in recs]

    train = encode(train_recs)
    model = Finetuner(a.model, a.task, n_out, a.dropout, a.from_scratch, a.seed)
    model.grow(specials)
    model.train()
    steps_per_epoch = math.ceil(len(train) / a.batch_size)
    total = a.max_steps or a.epochs * steps_per_epoch
    warmup = max(1, math.ceil(0.002 * total))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
        fused = True
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
        fused = False
    lm = a.aux_lm != 0.0
    pad = specials[0]
    step, t_train = 0, 0.0
    order = []
    while step < total:
        if not order:
            order = list(range(len(train)))
            random.shuffle(order)
        picked, order = order[: a.batch_size], order[a.batch_size :]
        ids, lens, targets, y, per = batch([train[i] for i in picked], pad)
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.lr, warmup, total)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
            scores, logits = model(ids, lens, per, lm)
            l2 = F.cross_entropy(scores.float(), y)
            loss = l2
            if lm:
                l1 = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)
                loss = l2 + a.aux_lm * l1
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        t_train += dt
        step += 1
        if a.json:
            print(json.dumps({"step": step, "loss": loss.item(), "examples": len(picked), "step_s": dt}), flush=True)
    out = {"steps": step, "warmup": warmup, "train_s": t_train, "fused_adamw": fused, "n_train": len(train)}
    out["tests"] = {}
    for path in a.test:
        test = encode(read(path, a.task))
        out["tests"][path] = {"accuracy": evaluate(model, test, pad, a.batch_size), "n": len(test)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
