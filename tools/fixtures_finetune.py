#!/usr/bin/env python3
"""Fixtures for GPT-1 fine-tuning (tests/finetune_torch.rs), built independently in PyTorch.

A tiny GPT (pre-LN GPT-2 style and post-LN GPT-1 style; learned positions, tied LM head) over a
character vocabulary with the three special tokens appended (start, delim, extract = V0, V0+1,
V0+2). For each task (classify, entail, similar, choice) a batch of three records, written to
tests/fixtures/finetune/{task}.jsonl, goes through:
  - the transform (GPT-1 Figure 1) with per-segment truncation, implemented here as the rule is
    stated: "while too long, drop the last token of the longer segment (ties: the later one)";
  - right padding (pad = start), the trunk, the extract rows (similar: both orders summed), the
    bias-free head score.weight (K, C) (choice: K = 1, softmax over the answers);
  - L2 = task cross-entropy (mean over examples), L1 = LM cross-entropy over every real next
    token (padding ignored), L3 = L2 + lam * L1, and every gradient of L3 for lam = 0.5 and 0.
Dropout is 0 (our dropout kernel has its own tests; masks cannot be shared across RNGs).

Writes tests/fixtures/finetune/{chars.json, {task}.jsonl, {pre,post}.safetensors} with
  param.<name>                the trunk (wte has V0 + 3 rows)
  <task>.score.weight         the head
  <task>.ids (R, T), <task>.lens (R)          the padded batch the transform gives
  <task>.scores (n, classes), <task>.l1, <task>.l2
  <task>.l3.<lam>, <task>.grad.<lam>.<name>   lam in {0.5, 0}
Run with the reference environment: ~/.cache/gpt-refenv/bin/python tools/fixtures_finetune.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "finetune")
NCTX, L, NH, C = 16, 2, 3, 12
HS = C // NH

RECORDS = {
    "classify": [
        {"text": "good film", "label": 1},
        {"text": "bad", "label": 0},
        {"text": "a long review that cannot fit here", "label": 1},
    ],
    "entail": [
        {"premise": "a dog runs", "hypothesis": "an animal moves", "label": "entailment"},
        {"premise": "two men", "hypothesis": "nobody", "label": "contradiction"},
        {"premise": "it is", "hypothesis": "maybe", "label": "neutral"},
    ],
    "similar": [
        {"sentence1": "the cat sat", "sentence2": "a cat sat", "label": 1},
        {"sentence1": "rain", "sentence2": "a very long second sentence", "label": 0},
        {"sentence1": "go", "sentence2": "went", "label": 0},
    ],
    "choice": [
        {"question": "sky is", "choices": ["blue", "green", "a hot dog"], "label": 0},
        {"question": "a question long enough to be cut", "choices": ["yes", "no", "maybe so"], "label": 2},
        {"question": "two", "choices": ["2", "3", "x"], "label": 0},
    ],
}

FIELDS = {"classify": ["text"], "entail": ["premise", "hypothesis"], "similar": ["sentence1", "sentence2"]}


def chars_of_records():
    s = set()
    for recs in RECORDS.values():
        for r in recs:
            for k, v in r.items():
                if k == "label":
                    continue
                for t in (v if isinstance(v, list) else [v]):
                    s.update(t)
    return sorted(s)


CHARS = chars_of_records()
V0 = len(CHARS)
START, DELIM, EXTRACT = V0, V0 + 1, V0 + 2
V = V0 + 3


def enc(text):
    return [CHARS.index(c) for c in text]


def cut(segs, budget):
    segs = [list(s) for s in segs]
    while sum(len(s) for s in segs) > budget:
        # the longer loses its last token; ties: the later one
        i = max(range(len(segs)), key=lambda j: (len(segs[j]), j))
        segs[i].pop()
    return segs


def single(x):
    (x,) = cut([x], NCTX - 2)
    return [START] + x + [EXTRACT]


def pair(a, b):
    a, b = cut([a, b], NCTX - 3)
    return [START] + a + [DELIM] + b + [EXTRACT]


def transform(task, r):
    if task == "classify":
        return [single(enc(r["text"]))]
    if task == "entail":
        return [pair(enc(r["premise"]), enc(r["hypothesis"]))]
    if task == "similar":
        a, b = enc(r["sentence1"]), enc(r["sentence2"])
        return [pair(a, b), pair(b, a)]
    return [pair(enc(r["question"]), enc(c)) for c in r["choices"]]


def labels(task):
    if task == "choice":
        return None
    ls = sorted({r["label"] for r in RECORDS[task]})
    return ls


def make_params(g, pre):
    p = {}

    def n(name, *shape, std=0.3, mean=0.0):
        p[name] = (mean + std * torch.randn(*shape, generator=g)).double()

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


def trunk(p, ids, pre):
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
    return x  # (R, T, C)


def task_case(task, p0, g, pre, out):
    recs = RECORDS[task]
    rows = [s for r in recs for s in transform(task, r)]
    per = len(rows) // len(recs)
    T = max(len(s) for s in rows)
    ids = torch.tensor([s + [START] * (T - len(s)) for s in rows])
    lens = torch.tensor([len(s) for s in rows])
    targets = torch.full((len(rows), T), -100)
    for i, s in enumerate(rows):
        targets[i, : len(s) - 1] = torch.tensor(s[1:])
    ls = labels(task)
    if task == "choice":
        y = torch.tensor([r["label"] for r in recs])
        k = 1
    else:
        y = torch.tensor([ls.index(r["label"]) for r in recs])
        k = len(ls)
    w0 = (0.4 * torch.randn(k, C, generator=g)).double()
    out[f"{task}.score.weight"] = w0.clone()
    out[f"{task}.ids"] = ids
    out[f"{task}.lens"] = lens
    for lam in (0.5, 0.0):
        p = {n: v.clone().requires_grad_(True) for n, v in p0.items()}
        w = w0.clone().requires_grad_(True)
        h = trunk(p, ids, pre)
        ext = h[torch.arange(len(rows)), lens - 1]  # (R, C)
        if task == "similar":
            ext = ext.view(len(recs), 2, C).sum(1)
        scores = ext @ w.t()
        if task == "choice":
            scores = scores.view(len(recs), per)
        l2 = F.cross_entropy(scores, y)
        logits = h @ p["wte.weight"].t()
        l1 = F.cross_entropy(logits.reshape(-1, V), targets.view(-1), ignore_index=-100)
        l3 = l2 + lam * l1
        l3.backward()
        tag = "0.5" if lam else "0"
        out[f"{task}.l3.{tag}"] = l3.detach().reshape(1)
        out[f"{task}.grad.{tag}.score.weight"] = w.grad.clone()
        for n, v in p.items():
            out[f"{task}.grad.{tag}.{n}"] = v.grad.clone()
        out[f"{task}.scores"] = scores.detach()
        out[f"{task}.l1"] = l1.detach().reshape(1)
        out[f"{task}.l2"] = l2.detach().reshape(1)


def variant(pre, seed):
    g = torch.Generator().manual_seed(seed)
    p0 = make_params(g, pre)
    out = {f"param.{k}": v.clone() for k, v in p0.items()}
    for task in RECORDS:
        task_case(task, p0, g, pre, out)
    out = {k: (v.contiguous().float() if v.is_floating_point() else v.contiguous()) for k, v in out.items()}
    name = "pre" if pre else "post"
    save_file(out, os.path.join(OUT, name + ".safetensors"))
    print(name, {t: round(out[f"{t}.l3.0.5"].item(), 5) for t in RECORDS})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "chars.json"), "w") as f:
        json.dump(CHARS, f, ensure_ascii=False)
    for task, recs in RECORDS.items():
        with open(os.path.join(OUT, f"{task}.jsonl"), "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    variant(True, 2024)
    variant(False, 4202)
