#!/usr/bin/env python3
"""The Table-5-style summary of bench/finetune_quality.sh: test accuracy (%, the mean over seeds
with the range) per task for
ours + aux LM, ours without aux LM, ours without pre-training, the PyTorch reference + aux LM,
and the majority-class baseline (the training split's most frequent label, or for multiple
choice its most frequent answer position, scored on the test split).

  python3 bench/finetune_quality_table.py OUT_DIR/results.jsonl [TASKS_DIR]
"""
import collections
import json
import os
import sys

VARIANTS = [
    ("ours-aux", "ours, pretrained + aux LM (λ 0.5)"),
    ("ours-noaux", "ours, pretrained, no aux LM"),
    ("ours-scratch", "ours, no pre-training"),
    ("torch-aux", "PyTorch reference, pretrained + aux LM"),
]
ORDER = ["sentiment_uci", "snli", "paraphrase_bible", "arc_easy", "piqa", "copa"]
TRAIN_OF = {"copa": "piqa"}  # copa has no train split: the piqa models are scored on it


def split(tasks, name, part):
    for d in (os.path.join(tasks, name), os.path.join(tasks, "multiple_choice", name)):
        p = os.path.join(d, f"{part}.jsonl")
        if os.path.exists(p):
            return [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]
    return None


def majority(tasks, test_name):
    train = split(tasks, TRAIN_OF.get(test_name, test_name), "train")
    test = split(tasks, test_name, "test")
    if not train or not test:
        return None
    top = collections.Counter(r["label"] for r in train).most_common(1)[0][0]
    return 100.0 * sum(r["label"] == top for r in test) / len(test)


def main():
    path = sys.argv[1]
    tasks = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tasks")
    runs, n = collections.defaultdict(list), {}
    for line in open(path):
        r = json.loads(line)
        runs[(r["test"], r["variant"])].append(100.0 * r["accuracy"])
        n[r["test"]] = r["n"]
    acc = {k: sum(v) / len(v) for k, v in runs.items()}
    seeds = max(len(v) for v in runs.values())
    cols = [t for t in ORDER if any(k[0] == t for k in acc)]
    head = "| method | " + " | ".join(f"{t} ({n[t]})" for t in cols) + " |"
    print(head)
    print("| --- |" + " ---: |" * len(cols))
    for key, label in VARIANTS:
        def cell(k):
            if k not in acc:
                return "-"
            v = runs[k]
            return f"{acc[k]:.1f}" + (f" ({min(v):.1f}–{max(v):.1f})" if len(v) > 1 else "")

        cells = [cell((t, key)) for t in cols]
        print(f"| {label} | " + " | ".join(cells) + " |")
    maj = [majority(tasks, t) for t in cols]
    print("| majority class | " + " | ".join("-" if m is None else f"{m:.1f}" for m in maj) + " |")
    print()
    print(f"mean over {seeds} seeds (range in brackets)" if seeds > 1 else "one seed")
    print("ours + aux − reference: " + ", ".join(
        f"{t} {acc[(t, 'ours-aux')] - acc[(t, 'torch-aux')]:+.1f}"
        for t in cols if (t, "ours-aux") in acc and (t, "torch-aux") in acc))


if __name__ == "__main__":
    main()
