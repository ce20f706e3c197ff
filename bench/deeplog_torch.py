#!/usr/bin/env python3
"""PyTorch peer for the log anomaly detection benchmark: DeepLog's log-key model (Du et al.,
CCS 2017, as in the reference implementation github.com/wuyifan18/DeepLog) and an n-gram count
baseline, on HDFS block sessions in DeepLog format (one session per line, space-separated log
keys 1..K; the files are read in place, never copied).

Split (fixed, shared with the Rust side): training = normal sessions 1..T (lines, 1-based),
validation = the next V, test normal = the rest of the normal file; test abnormal = every line of
the abnormal file. Positives = abnormal sessions.

Models (`--model`):
* `deeplog`: 2-layer LSTM (hidden 64) over windows of h = 10 keys, each key fed as ONE SCALAR
  (key - 1 as a float, input size 1, as in the reference code; `--input onehot` feeds one-hot
  vectors instead), a linear head over the keys; zero initial state per window. Training
  windows: every window of every training session; cross-entropy, Adam lr 1e-3, batch 2048,
  reshuffled each epoch. A session is anomalous if at some position the true next key is not
  among the model's top-g (g = 9) predictions.
  - without `--eos`, exactly the reference: sessions shorter than h + 1 keys give no training
    window; at test time they are padded with -1 to h + 1 keys, so their one target is -1,
    never in the top g: every such session is flagged (HDFS: 6193 abnormal sessions of 2..10
    keys, no normal one).
  - with `--eos`, every session is [-1] * h + keys + [EOS] (start padding as the scalar -1, EOS
    a class of its own, index K): every key and the end of the session are predicted, so a
    session that stops early is caught by the model, not by the padding rule.
* `ngram`: counts of (n-1)-key context -> next token over [BOS] * (n-1) + keys + [EOS]; a
  position passes if its context was seen in training and the true next token has a non-zero
  count ranked in the top g of that context (ties broken by the lower token id); a session is
  anomalous if any position fails.

Timing: train_seconds covers building the training windows and the epochs (validation losses
excluded); score_seconds covers, for every test session (normal + abnormal, no deduplication),
padding, window building, batched inference under torch.inference_mode and the per-session
reduction, from the parsed key lists to the confusion counts (file parsing excluded). One
small untimed warm-up forward runs before scoring.

Output: JSON lines on stdout: {"event":"epoch",...} per epoch, then {"event":"result",...}.

Usage:
  python bench/deeplog_torch.py --model deeplog [--eos] --epochs 30 --threads 2 --seed 0 \
      --normal DATA/hdfs_train --abnormal DATA/hdfs_test_abnormal \
      --train-sessions 3600 --valid-sessions 400
  python bench/deeplog_torch.py --model ngram --n 3 --threads 2 \
      --normal DATA/hdfs_train --abnormal DATA/hdfs_test_abnormal \
      --train-sessions 3600 --valid-sessions 400
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_sessions(path, num_keys):
    sessions = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            keys = [int(t) - 1 for t in line.split()]
            if not keys:
                raise SystemExit(f"{path}:{lineno}: empty session")
            if min(keys) < 0 or max(keys) >= num_keys:
                raise SystemExit(f"{path}:{lineno}: key outside 1..{num_keys}")
            sessions.append(keys)
    return sessions


def make_windows(seqs, first, n_targets, h):
    """Windows over already padded sequences: session j contributes n_targets[j] windows,
    the t-th one is seqs[j][first + t - h : first + t] -> seqs[j][first + t].
    Returns (x [W, h] int64, y [W] int64, seg [W] session index)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    flat = torch.tensor([k for s in seqs for k in s], dtype=torch.int64)
    offsets = torch.cumsum(lengths, 0) - lengths
    n_targets = torch.as_tensor(n_targets, dtype=torch.int64)
    seg = torch.repeat_interleave(torch.arange(len(seqs)), n_targets)
    win_base = torch.cumsum(n_targets, 0) - n_targets
    t = torch.arange(seg.numel()) - win_base[seg]
    starts = offsets[seg] + first - h + t
    x = flat[starts[:, None] + torch.arange(h)]
    y = flat[starts + h]
    return x, y, seg


# ---------------------------------------------------------------- DeepLog (LSTM)

def deeplog_windows(sessions, h, eos, eos_id):
    if eos:
        seqs = [[-1] * h + s + [eos_id] for s in sessions]
        n_targets = [len(s) + 1 for s in sessions]
        return make_windows(seqs, h, n_targets, h)
    # reference code: pad short sessions with -1 to h + 1 keys (test time), windows at i >= h
    seqs = [s + [-1] * (h + 1 - len(s)) if len(s) < h + 1 else s for s in sessions]
    n_targets = [len(s) - h for s in seqs]
    return make_windows(seqs, h, n_targets, h)


def deeplog_train_windows(sessions, h, eos, eos_id):
    if eos:
        return deeplog_windows(sessions, h, eos, eos_id)
    # reference training: sessions of <= h keys give no window (no padding)
    seqs = [s for s in sessions if len(s) > h]
    return make_windows(seqs, h, [len(s) - h for s in seqs], h)


class DeepLog(nn.Module):
    def __init__(self, num_inputs, num_classes, hidden, layers, onehot):
        super().__init__()
        self.onehot, self.num_inputs = onehot, num_inputs
        self.lstm = nn.LSTM(num_inputs if onehot else 1, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, keys):  # keys [B, h] int64, -1 = padding
        if self.onehot:  # padding -> all-zero vector
            x = F.one_hot(keys + 1, self.num_inputs + 1)[..., 1:].float()
        else:
            x = keys.float().unsqueeze(-1)
        out, _ = self.lstm(x)  # zero initial state, as the reference
        return self.fc(out[:, -1, :])


def run_deeplog(a, train, valid, test, labels):
    K, h, g = a.num_keys, a.window, a.top_g
    num_classes = K + 1 if a.eos else K
    model = DeepLog(num_classes, num_classes, a.hidden, a.layers, a.input == "onehot")
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)

    t0 = time.perf_counter()
    x, y, _ = deeplog_train_windows(train, h, a.eos, K)
    build_s = time.perf_counter() - t0
    vx, vy, vseg = deeplog_windows(valid, h, a.eos, K)
    n_win = x.shape[0]
    epoch_s_total = 0.0
    for epoch in range(1, a.epochs + 1):
        model.train()
        t1 = time.perf_counter()
        perm = torch.randperm(n_win, generator=gen)
        total, steps = 0.0, 0
        for i in range(0, n_win, a.batch_size):
            idx = perm[i:i + a.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        dt = time.perf_counter() - t1
        epoch_s_total += dt
        rec = {"event": "epoch", "epoch": epoch, "loss": round(total / steps, 6),
               "seconds": round(dt, 4)}
        if vx.shape[0]:
            model.eval()
            with torch.inference_mode():
                vt = vy >= 0  # padded targets (no --eos) have no loss
                vl = F.cross_entropy(model(vx[vt]), vy[vt]).item() if vt.any() else float("nan")
            rec["valid_loss"] = round(vl, 6)
        print(json.dumps(rec), flush=True)
    train_s = build_s + epoch_s_total

    model.eval()

    def flag(sessions):
        xs, ys, seg = deeplog_windows(sessions, h, a.eos, K)
        anomalous = torch.zeros(len(sessions), dtype=torch.bool)
        with torch.inference_mode():
            for i in range(0, xs.shape[0], a.score_batch):
                top = model(xs[i:i + a.score_batch]).topk(g, dim=1).indices
                hit = (top == ys[i:i + a.score_batch, None]).any(1)
                anomalous[seg[i:i + a.score_batch][~hit]] = True
        return anomalous

    with torch.inference_mode():  # warm-up, untimed
        model(deeplog_windows(test[:64], h, a.eos, K)[0])
    valid_flags = flag(valid) if valid else torch.zeros(0, dtype=torch.bool)
    t2 = time.perf_counter()
    pred = flag(test)
    score_s = time.perf_counter() - t2
    return pred, valid_flags, train_s, a.epochs, score_s


# ---------------------------------------------------------------- n-gram counts

def ngram_windows(sessions, n, K):
    bos, eos = K + 1, K
    seqs = [[bos] * (n - 1) + s + [eos] for s in sessions]
    x, y, seg = make_windows(seqs, n - 1, [len(s) + 1 for s in sessions], n - 1)
    V = K + 2
    ctx = torch.zeros(x.shape[0], dtype=torch.int64)
    for j in range(n - 1):
        ctx = ctx * V + x[:, j]
    return ctx, y, seg


def run_ngram(a, train, valid, test, labels):
    K, n, g = a.num_keys, a.n, a.top_g
    V = K + 2
    t0 = time.perf_counter()
    ctx, y, _ = ngram_windows(train, n, K)
    uniq, inv = torch.unique(ctx, sorted=True, return_inverse=True)
    table = torch.zeros(uniq.numel(), V, dtype=torch.int64)
    table.index_put_((inv, y), torch.ones_like(y), accumulate=True)
    train_s = time.perf_counter() - t0
    ids = torch.arange(V)

    def flag(sessions):
        c, nxt, seg = ngram_windows(sessions, n, K)
        pos = torch.searchsorted(uniq, c).clamp(max=uniq.numel() - 1)
        seen = uniq[pos] == c
        row = table[pos]
        cnt = row.gather(1, nxt[:, None])
        rank = (row > cnt).sum(1) + ((row == cnt) & (ids < nxt[:, None])).sum(1)
        hit = seen & (cnt[:, 0] > 0) & (rank < g)
        anomalous = torch.zeros(len(sessions), dtype=torch.bool)
        anomalous[seg[~hit]] = True
        return anomalous

    flag(test[:64])  # warm-up, untimed
    valid_flags = flag(valid) if valid else torch.zeros(0, dtype=torch.bool)
    t2 = time.perf_counter()
    pred = flag(test)
    score_s = time.perf_counter() - t2
    return pred, valid_flags, train_s, 1, score_s


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["deeplog", "ngram"], default="deeplog")
    p.add_argument("--normal", required=True, help="normal sessions (DeepLog hdfs_train)")
    p.add_argument("--abnormal", required=True, help="abnormal sessions (hdfs_test_abnormal)")
    p.add_argument("--train-sessions", type=int, default=3600)
    p.add_argument("--valid-sessions", type=int, default=400)
    p.add_argument("--num-keys", type=int, default=28, help="keys are 1..K")
    p.add_argument("--eos", action="store_true",
                   help="deeplog: start padding + end-of-session class (ngram always has both)")
    p.add_argument("--window", type=int, default=10, help="deeplog history h")
    p.add_argument("--top-g", type=int, default=9)
    p.add_argument("--n", type=int, default=3, help="ngram order")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--input", choices=["scalar", "onehot"], default="scalar",
                   help="deeplog key encoding (reference: scalar)")
    p.add_argument("--score-batch", type=int, default=16384)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.set_num_interop_threads(1)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    normal = read_sessions(a.normal, a.num_keys)
    abnormal = read_sessions(a.abnormal, a.num_keys)
    nt, nv = a.train_sessions, a.valid_sessions
    if nt <= 0 or nv < 0 or nt + nv >= len(normal):
        raise SystemExit(f"split {nt}+{nv} leaves no test normal sessions of {len(normal)}")
    train, valid, test_normal = normal[:nt], normal[nt:nt + nv], normal[nt + nv:]
    test = test_normal + abnormal
    labels = torch.cat([torch.zeros(len(test_normal), dtype=torch.bool),
                        torch.ones(len(abnormal), dtype=torch.bool)])

    run = run_deeplog if a.model == "deeplog" else run_ngram
    pred, valid_flags, train_s, epochs, score_s = run(a, train, valid, test, labels)

    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    tn = int((~pred & ~labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    res = {"event": "result", "model": a.model,
           "eos": bool(a.eos) or a.model == "ngram", "window": a.window, "top_g": a.top_g}
    if a.model == "ngram":
        res["n"] = a.n
    else:
        res.update({"input": a.input, "epochs": epochs})
    res.update({
        "train_sessions": nt, "train_seconds": round(train_s, 4),
        "train_sessions_per_s": round(nt * epochs / train_s, 2),
        "score_seconds": round(score_s, 4),
        "score_sessions_per_s": round(len(test) / score_s, 2),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": round(precision, 6), "recall": round(recall, 6),
        "f1": round(f1, 6), "fpr": round(fpr, 6),
        "valid_sessions": nv, "valid_flagged": int(valid_flags.sum()),
        "threads": torch.get_num_threads(), "seed": a.seed})
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
