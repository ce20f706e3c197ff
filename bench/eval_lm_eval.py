#!/usr/bin/env python3
"""Peer of `gpt bench eval --vs-lm-eval`: lm-evaluation-harness 0.4.x (transformers backend,
float32, CPU, batch 1 as its default) on the same tasks, files, model and threads.

Each task is evaluated on its own and timed from the request building to the metrics (the
model is loaded once, before); prints one JSON line:
{"threads": T, "tasks": {name: {"seconds": s, "metrics": {"acc,none": ...}}}}.
The task YAMLs are those of tools/check_lm_eval.py (our built-in task files translated).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import check_lm_eval  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--num-fewshot", type=int, default=0)
    ap.add_argument("--bootstrap-iters", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    tmp = tempfile.mkdtemp(prefix="bench_lm_eval_")
    out = {"threads": a.threads, "tasks": {}}
    try:
        for t in a.tasks.split(","):
            res, secs = check_lm_eval.run_lm_eval(os.path.abspath(a.model), [t], a.num_fewshot,
                                                  a.limit, a.data_dir, a.bootstrap_iters, tmp)
            metrics = {k: v for k, v in res["results"][f"x_{t}"].items() if k != "alias"}
            out["tasks"][t] = {"seconds": secs, "metrics": metrics}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
