#!/usr/bin/env bash
# Issue 18, HDFS: where the surprisal detector's operating point comes from. Trains
# `gpt logs train` on DeepLog's first 4,000 normal sessions (its own 3,600 / 400 split for the
# threshold) with the given flags, scores the 400 validation, 855 held-out normal and 16,838
# abnormal sessions, and prints the test FPR and recall at the validation-chosen threshold
# beside the best recall any threshold reaches at a test FPR ≤ 0.01 (an oracle that reads
# test labels: a bound, not a result). Also prints how many sessions hold an n-gram of keys
# never seen in training (n = 2..5), the novelty every detector here feeds on.
#
#   tools/hdfs_threshold_study.sh NAME [gpt logs train flags...]
#   tools/hdfs_threshold_study.sh e20 --epochs 20 --seed 1
set -euo pipefail
name=${1:?usage: $0 NAME [train flags...]}; shift
data=${HDFS_DIR:-../shared/data/logs/hdfs_deeplog}
gpt=${GPT:-./target/release/gpt}
work=${WORK:-/tmp/hdfs-study}
mkdir -p "$work"
head -4000 "$data/hdfs_train" > "$work/train4000"
sed -n 3601,4000p "$data/hdfs_train" > "$work/val400"
tail -n +4001 "$data/hdfs_train" > "$work/test_normal"
cp "$data/hdfs_test_abnormal" "$work/abn"
"$gpt" logs train --sessions "$work/train4000" --out "$work/$name" --overwrite --json "$@" \
  | tail -1 > "$work/$name.train.json"
for f in val400 test_normal abn; do
  "$gpt" logs detect --model "$work/$name" --detector surprisal --json --sessions "$work/$f" \
    > "$work/$name.$f.jsonl" 2>/dev/null
done
python3 - "$work" "$name" <<'PY'
import json, math, sys
work, name = sys.argv[1], sys.argv[2]
tj = json.load(open(f"{work}/{name}.train.json"))
def scores(f):
    out = []
    for line in open(f"{work}/{name}.{f}.jsonl"):
        if line.startswith("{"):
            s = json.loads(line)["score"]
            out.append(math.inf if s is None else s)
    return out
v, t, a = scores("val400"), scores("test_normal"), scores("abn")
thr = tj["threshold"]
fpr = sum(x > thr for x in t) / len(t)
rec = sum(x > thr for x in a) / len(a)
allowed = int(0.01 * len(t))
oracle = sorted(t, reverse=True)[allowed]
orec = sum(x > oracle for x in a) / len(a)
print(f"{name}: val_loss {tj['val_loss']:.4f}, threshold {thr:.2f} (validation FPR 0.01): "
      f"test FPR {fpr:.4f}, recall {rec:.4f} | oracle at test FPR <= {allowed / len(t):.4f}: recall {orec:.4f}")
print("  validation scores, top 6:", [round(x, 2) for x in sorted(v, reverse=True)[:6]])
print("  held-out normal scores, top 12:", [round(x, 2) for x in sorted(t, reverse=True)[:12]])
def lines(f):
    return [l for l in open(f"{work}/{f}").read().split("\n") if l.strip()]
def grams(s, n):
    k = ["<s>"] * (n - 1) + s.split() + ["</s>"]
    return {tuple(k[i:i + n]) for i in range(len(k) - n + 1)}
tr, te, ab = lines("train4000"), lines("test_normal"), lines("abn")
for n in (2, 3, 4, 5):
    seen = set().union(*(grams(s, n) for s in tr))
    ft = sum(1 for s in te if grams(s, n) - seen) / len(te)
    fa = sum(1 for s in ab if grams(s, n) - seen) / len(ab)
    print(f"  sessions with a {n}-gram unseen in training: held-out normal {ft:.4f}, abnormal {fa:.4f}")
PY
