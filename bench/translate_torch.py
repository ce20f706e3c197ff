#!/usr/bin/env python3
"""PyTorch side of the translation comparison (issue 7): `nn.Transformer` with the same
configuration as a `gpt translate train` preset (post-LN, ReLU, sinusoidal positions, embeddings
scaled by sqrt(d_model) and shared with the generator), the same joint BPE (the run's
`tokenizer/tokenizer.json`, loaded with HF `tokenizers`), the same token-budget batches, label
smoothing 0.1, Adam (0.9, 0.98, 1e-9) with the inverse-square-root schedule, eager f32, the same
threads; and the same beam search (beam 4, GNMT length penalty alpha 0.6, max length = source
length + 50, fairseq bookkeeping, see src/translate/decode.rs), with an incremental-free decoder
(nn.TransformerDecoder recomputes the prefix; PyTorch has no KV cache for it).

Modes:
  quality  train for --minutes, then translate the test split and print sacreBLEU BLEU / chrF
  train-speed  training tokens/s on the exact batches (token ids) that `gpt bench translate`
               wrote to --work, the first two untimed; median of the rest
  beam-speed   beam-4 sentences/s on the source ids in --work with the weights of a `gpt
               translate` model directory (--model), loaded into nn.Transformer; prints the
               output ids too so the caller can check both implementations agree

Usage:
  python bench/translate_torch.py quality --tokenizer RUN/tokenizer --data data/bible_es_en \
      --preset transformer-small --minutes 10 --threads 2
  gpt bench translate --model RUN --vs-torch      (runs the two speed modes itself)
Prints one JSON line.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer

PRESETS = {
    "transformer-small": (3, 256, 4, 1024, 0.1),
    "transformer-base": (6, 512, 8, 2048, 0.1),
    "transformer-big": (6, 1024, 16, 4096, 0.3),
}


def read_tsv(path):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s, sep, t = line.rstrip("\n").rstrip("\r").partition("\t")
            if sep and s.strip() and t.strip():
                pairs.append((s.strip(), t.strip()))
    return pairs


def positions(n, c):
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(c)
    ang = pos * torch.exp(-(2 * (i // 2)).double() * math.log(10000.0) / c)[None]
    return torch.where(i % 2 == 0, torch.sin(ang), torch.cos(ang)).float()


class Model(nn.Module):
    def __init__(self, v, n, c, h, ff, p, max_len=512):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(v, c)
        nn.init.normal_(self.embed.weight, 0.0, c ** -0.5)
        self.register_buffer("pe", positions(max_len, c))
        self.drop = nn.Dropout(p)
        self.tf = nn.Transformer(c, h, n, n, ff, p, activation="relu", batch_first=True)

    def emb(self, ids):
        return self.drop(math.sqrt(self.c) * self.embed(ids) + self.pe[: ids.shape[1]])

    def encode(self, src, src_pad):
        return self.tf.encoder(self.emb(src), src_key_padding_mask=src_pad)

    def decode(self, mem, src_pad, tgt, tgt_pad=None, last_only=False):
        t = tgt.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf")), 1)
        y = self.tf.decoder(self.emb(tgt), mem, tgt_mask=causal, tgt_key_padding_mask=tgt_pad,
                            memory_key_padding_mask=src_pad)
        if last_only:  # decoding needs the newest position's logits only
            y = y[:, -1]
        return y @ self.embed.weight.T


def token_batches(pairs, max_tokens):
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1]), i))
    out, cur, longest = [], [], 0
    for i in order:
        n = max(len(pairs[i][0]), len(pairs[i][1])) + 1
        l = max(longest, n)
        if cur and l * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, longest = [], n
        else:
            longest = l
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def make_batch(pairs, idx, pad, bos, eos):
    b = len(idx)
    s = max(len(pairs[i][0]) for i in idx) + 1
    t = max(len(pairs[i][1]) for i in idx) + 1
    src = torch.full((b, s), pad)
    tin = torch.full((b, t), pad)
    tout = torch.full((b, t), -100)
    for r, i in enumerate(idx):
        x, y = pairs[i]
        src[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        src[r, len(x)] = eos
        tin[r, 0] = bos
        tin[r, 1: len(y) + 1] = torch.tensor(y, dtype=torch.long)
        tout[r, : len(y)] = torch.tensor(y, dtype=torch.long)
        tout[r, len(y)] = eos
    return src, tin, tout


def lp(n, alpha):
    return ((5.0 + n) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model, src_ids, pad, bos, eos, k=4, alpha=0.6, extra=50):
    """One source at a time's bookkeeping, batched over the live beams of all sources."""
    model.eval()
    n = len(src_ids)
    src, _, _ = make_batch([(s, []) for s in src_ids], list(range(n)), pad, bos, eos)
    src_pad = src == pad
    mem = model.encode(src, src_pad)
    max_out = [len(s) + 1 + extra for s in src_ids]
    live = [[([bos], 0.0)] for _ in range(n)]
    fin = [[] for _ in range(n)]
    step = 0
    while True:
        step += 1
        act = [i for i in range(n) if len(fin[i]) < k and live[i]]
        if not act:
            break
        rows = [(i, h) for i in act for h in live[i]]
        tgt = torch.tensor([h[0] for _, h in rows])
        ridx = torch.tensor([i for i, _ in rows])
        logp = model.decode(mem[ridx], src_pad[ridx], tgt, last_only=True).log_softmax(-1)
        logp[:, pad] = float("-inf")
        logp[:, bos] = float("-inf")
        r0 = 0
        for i in act:
            hyps = live[i]
            block = logp[r0: r0 + len(hyps)]
            r0 += len(hyps)
            if step >= max_out[i]:
                cands = [(hyps[h][1] + block[h, eos].item(), h, eos) for h in range(len(hyps))]
            else:
                tot = block + torch.tensor([h[1] for h in hyps])[:, None]
                vals, flat = tot.flatten().topk(min(2 * k, tot.numel()))
                v = block.shape[1]
                cands = [(vals[j].item(), flat[j].item() // v, flat[j].item() % v)
                         for j in range(len(vals))]
            cands.sort(key=lambda c: (-c[0], c[1], c[2]))
            nxt = []
            for rank, (score, h, tok) in enumerate(cands[: 2 * k]):
                if tok == eos:
                    if rank < k and len(fin[i]) < k:
                        fin[i].append((hyps[h][0][1:], score / lp(step, alpha)))
                elif len(nxt) < k:
                    nxt.append((hyps[h][0] + [tok], score))
            live[i] = nxt
    return [max(f, key=lambda x: x[1])[0] for f in fin]


def load_gpt_model(model_dir):
    """nn.Transformer with the weights of a `gpt translate` model directory (`config.json` +
    `model.safetensors`, names in src/model/transformer.rs: linear weights stored (in, out))."""
    from safetensors.torch import load_file
    d = model_dir
    if not os.path.exists(os.path.join(d, "config.json")):
        with open(os.path.join(d, "latest")) as f:
            d = os.path.join(d, f.read().strip())
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)["transformer"]
    if cfg["activation"] != "relu":
        raise SystemExit(f"{d}: only ReLU models are supported here")
    pre = cfg["norm"] == "pre"
    c, n = cfg["d_model"], cfg["n_layer"]
    model = Model(cfg["vocab_size"], n, c, cfg["n_head"], cfg["d_ff"], 0.0, cfg["max_len"])
    if pre:
        model.tf = nn.Transformer(c, cfg["n_head"], n, n, cfg["d_ff"], 0.0, activation="relu",
                                  batch_first=True, norm_first=True)
    w = load_file(os.path.join(d, "model.safetensors"))
    sd = {"embed.weight": w["embed.weight"]}

    def lin(dst, src):
        sd[f"{dst}.weight"] = w[f"{src}.weight"].T.contiguous()
        sd[f"{dst}.bias"] = w[f"{src}.bias"]

    def norm(dst, src):
        sd[f"{dst}.weight"] = w[f"{src}.weight"]
        sd[f"{dst}.bias"] = w[f"{src}.bias"]

    for stack in ("encoder", "decoder"):
        for i in range(n):
            o, g = f"tf.{stack}.layers.{i}", f"{stack}.h.{i}"
            lin(f"{o}.self_attn.in_proj", f"{g}.attn.c_attn")
            sd[f"{o}.self_attn.in_proj_weight"] = sd.pop(f"{o}.self_attn.in_proj.weight")
            sd[f"{o}.self_attn.in_proj_bias"] = sd.pop(f"{o}.self_attn.in_proj.bias")
            lin(f"{o}.self_attn.out_proj", f"{g}.attn.c_proj")
            lin(f"{o}.linear1", f"{g}.mlp.c_fc")
            lin(f"{o}.linear2", f"{g}.mlp.c_proj")
            norm(f"{o}.norm1", f"{g}.ln_1")
            if stack == "decoder":
                q, kv = f"{g}.crossattention.q_attn", f"{g}.crossattention.c_attn"
                sd[f"{o}.multihead_attn.in_proj_weight"] = torch.cat(
                    [w[f"{q}.weight"].T, w[f"{kv}.weight"].T]).contiguous()
                sd[f"{o}.multihead_attn.in_proj_bias"] = torch.cat([w[f"{q}.bias"], w[f"{kv}.bias"]])
                lin(f"{o}.multihead_attn.out_proj", f"{g}.crossattention.c_proj")
                norm(f"{o}.norm2", f"{g}.ln_cross_attn")
                norm(f"{o}.norm3", f"{g}.ln_2")
            else:
                norm(f"{o}.norm2", f"{g}.ln_2")
        if pre:
            norm(f"tf.{stack}.norm", f"{stack}.ln_f")
        else:
            # nn.Transformer always ends each stack with a LayerNorm; the paper's post-LN
            # model (ours) has none after the last block's own.
            getattr(model.tf, stack).norm = None
    sd["pe"] = model.pe
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model, (cfg["pad_id"], cfg["bos_id"], cfg["eos_id"])


def setup(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    pad, bos, eos = (tok.token_to_id(s) for s in ("<pad>", "<s>", "</s>"))
    n, c, h, ff, p = PRESETS[args.preset]
    model = Model(tok.get_vocab_size(), n, c, h, ff, p)
    return tok, (pad, bos, eos), model


def encode(tok, pairs, max_len):
    ids = tok.encode_batch([x for pr in pairs for x in pr], add_special_tokens=False)
    ids = [e.ids[:max_len] for e in ids]
    return list(zip(ids[0::2], ids[1::2]))


@torch.no_grad()
def validation_loss(model, pairs, specials, max_tokens):
    """Token-weighted mean label-smoothed loss over the validation batches (as ours)."""
    pad, bos, eos = specials
    model.eval()
    total, count = 0.0, 0
    for idx in token_batches(pairs, max_tokens):
        src, tin, tout = make_batch(pairs, idx, pad, bos, eos)
        logits = model.decode(model.encode(src, src == pad), src == pad, tin, tin == pad)
        n = int((tout != -100).sum())
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1),
                                 ignore_index=-100, label_smoothing=0.1).item() * n
        count += n
    model.train()
    return total / count


def train_steps(model, pairs, specials, args, budget_s=None, max_steps=None, valid=None):
    pad, bos, eos = specials
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    c = model.c
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: args.lr_scale * c ** -0.5 * min((s + 1) ** -0.5, (s + 1) * args.warmup ** -1.5))
    batches = token_batches(pairs, args.max_tokens)
    rng = random.Random(args.seed)
    order = []
    rates, t_start, step = [], time.time(), 0
    model.train()
    while True:
        if not order:
            order = list(range(len(batches)))
            rng.shuffle(order)
        src, tin, tout = make_batch(pairs, batches[order.pop()], pad, bos, eos)
        t0 = time.time()
        logits = model.decode(model.encode(src, src == pad), src == pad, tin, tin == pad)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1),
                               ignore_index=-100, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        ntok = int((src != pad).sum() + (tout != -100).sum())
        rates.append(ntok / (time.time() - t0))
        done = (max_steps and step >= max_steps) or (budget_s and time.time() - t_start >= budget_s)
        if valid is not None and (step % args.eval_interval == 0 or done):
            t_eval = time.time()
            vl = validation_loss(model, valid, specials, args.max_tokens)
            t_start += time.time() - t_eval  # evaluation is not charged to the training budget
            print(json.dumps({"step": step, "loss": loss.item(), "val_loss": vl}),
                  file=sys.stderr, flush=True)
        if done:
            break
    return step, statistics.median(rates), loss.item()


def timed_steps(model, batches, specials):
    """Training steps on fixed batches of (source ids, target ids) pairs; the first two are
    warm-up. Returns the median tokens/s (real source + target tokens incl. EOS) of the rest."""
    pad, bos, eos = specials
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    rates = []
    for step, pairs in enumerate(batches):
        src, tin, tout = make_batch(pairs, list(range(len(pairs))), pad, bos, eos)
        t0 = time.perf_counter()
        logits = model.decode(model.encode(src, src == pad), src == pad, tin, tin == pad)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1),
                               ignore_index=-100, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if step >= 2:
            rates.append(int((src != pad).sum() + (tout != -100).sum()) / dt)
    return statistics.median(rates)


def beam_all(model, src, specials, batch=16, k=4):
    """Beam search over `src` (lists of ids) in length-sorted groups of `batch`, as `gpt
    translate` does; returns the outputs in input order and the seconds taken."""
    t0 = time.perf_counter()
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    res = {}
    for j in range(0, len(order), batch):
        chunk = order[j: j + batch]
        for i, h in zip(chunk, beam_search(model, [src[i] for i in chunk], *specials, k=k)):
            res[i] = h
    return [res[i] for i in range(len(src))], time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["quality", "train-speed", "beam-speed"])
    ap.add_argument("--tokenizer", help="quality: the run's tokenizer directory")
    ap.add_argument("--work", help="train-speed / beam-speed: JSON written by gpt bench translate")
    ap.add_argument("--model", help="beam-speed: a gpt translate model or run directory")
    ap.add_argument("--data", default="data/bible_es_en")
    ap.add_argument("--preset", default="transformer-small")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--lr-scale", type=float, default=1.0)
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--eval-interval", type=int, default=250,
                    help="quality: validation loss every N steps (JSON lines on stderr)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = {"mode": args.mode, "preset": args.preset, "threads": args.threads,
           "torch": torch.__version__}
    if args.mode == "train-speed":
        with open(args.work) as f:
            work = json.load(f)
        specials = (work["pad"], work["bos"], work["eos"])
        n, c, h, ff, p = PRESETS[args.preset]
        model = Model(work["vocab_size"], n, c, h, ff, p)
        out.update(steps=len(work["batches"]) - 2,
                   train_tokens_per_sec=timed_steps(model, work["batches"], specials))
        print(json.dumps(out))
        return
    if args.mode == "beam-speed":
        with open(args.work) as f:
            work = json.load(f)
        model, specials = load_gpt_model(args.model)
        with torch.no_grad():
            hyps, secs = beam_all(model, work["sources"], specials, k=args.beam)
        out.update(sentences=len(hyps), seconds=secs, sentences_per_sec=len(hyps) / secs,
                   outputs=hyps)
        print(json.dumps(out))
        return
    tok, specials, model = setup(args)
    train = encode(tok, read_tsv(os.path.join(args.data, "train.tsv")), args.max_len)
    valid = encode(tok, read_tsv(os.path.join(args.data, "valid.tsv")), args.max_len)
    steps, rate, loss = train_steps(model, train, specials, args, budget_s=args.minutes * 60,
                                    valid=valid)
    out.update(steps=steps, train_tokens_per_sec=rate, last_loss=loss)
    test = read_tsv(os.path.join(args.data, "test.tsv"))[: args.limit]
    src = [e.ids[: args.max_len] for e in tok.encode_batch([s for s, _ in test],
                                                           add_special_tokens=False)]
    ids, secs = beam_all(model, src, specials, k=args.beam)
    hyps = [tok.decode(h).strip() for h in ids]
    out.update(sentences=len(hyps), sentences_per_sec=len(hyps) / secs)
    from sacrebleu.metrics import BLEU, CHRF
    refs = [t for _, t in test]
    out.update(bleu=BLEU().corpus_score(hyps, [refs]).score,
               chrf=CHRF().corpus_score(hyps, [refs]).score)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
