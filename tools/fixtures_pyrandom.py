#!/usr/bin/env python3
"""Python's random.Random outputs for tests/eval_pyrandom.rs (plain python3, no packages).

Writes tests/fixtures/eval/pyrandom.json: for several seeds, getrandbits(32) words, random(),
sample(range(n), k) for pool and set regimes, shuffle, choices, and lm-eval's few-shot draw
pattern (one Random(1234) shared across calls of sample(docs, k)).
"""
import json
import os
import random
import sys

out = {"python": sys.version.split()[0], "cases": []}
for seed in [0, 1, 42, 1234, 2**32 + 5, -7, 2**63 - 1]:
    r = random.Random(seed)
    case = {"seed": seed}
    case["u32"] = [r.getrandbits(32) for _ in range(8)]
    # random() as its exact 53-bit integer (JSON float parsing need not round-trip)
    case["random53"] = [int(r.random() * 2**53) for _ in range(4)]
    case["bits"] = [r.getrandbits(k) for k in (1, 5, 31, 33, 64)]
    case["randbelow"] = [r.randrange(n) for n in (1, 2, 3, 7, 100, 1000, 2**20 + 3)]
    case["sample"] = []
    for n, k in [(10, 3), (21, 5), (22, 5), (100, 1), (1668, 5), (50, 6), (217, 25), (5, 5)]:
        case["sample"].append({"n": n, "k": k, "got": r.sample(range(n), k)})
    x = list(range(20))
    r.shuffle(x)
    case["shuffle20"] = x
    case["choices"] = {"n": 37, "k": 10, "got": r.choices(range(37), k=10)}
    out["cases"].append(case)

# lm-eval's few-shot pattern: Random(1234), then sample(docs, K (+1)) once per doc in order.
r = random.Random(1234)
out["fewshot_1234"] = [r.sample(range(1668), 5) for _ in range(4)] + [r.sample(range(100), 2)]

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "eval", "pyrandom.json")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", os.path.normpath(path))
