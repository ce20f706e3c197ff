#!/usr/bin/env python3
"""Dev check: a `gpt finetune` output (classify or entail task) loads in transformers'
GPT2ForSequenceClassification (pre-LN base) or OpenAIGPTForSequenceClassification (post-LN base)
and gives our probabilities within 1e-4.

Our side is `gpt classify --model DIR --json DATA` (per line {"label", "probs", "ids"}); the
transformers side feeds the same ids, right-padded in batches of 16 with pad_token_id (the start
token) and an attention mask, so the pooling at the last non-padding token (the extract token)
is exercised with padding too.

Usage: ~/.cache/gpt-refenv/bin/python tools/check_hf_classifier.py MODEL_DIR DATA.jsonl [GPT_BIN]
(MODEL_DIR: the --out of `gpt finetune` or its checkpoint/; GPT_BIN default target/release/gpt)
"""
import json
import os
import subprocess
import sys

import torch
import transformers


def main():
    model_dir, data = sys.argv[1], sys.argv[2]
    gpt = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "target", "release", "gpt")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        model_dir = os.path.join(model_dir, "checkpoint")
    out = subprocess.run([gpt, "classify", "--model", model_dir, "--json", data], check=True, capture_output=True, text=True).stdout
    ours = [json.loads(line) for line in out.splitlines() if line.strip()]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    arch = cfg["architectures"][0]
    cls = getattr(transformers, arch)
    model = cls.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    pad = cfg["pad_token_id"]
    worst, agree = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ours), 16):
            chunk = ours[i : i + 16]
            t = max(len(o["ids"]) for o in chunk)
            ids = torch.tensor([o["ids"] + [pad] * (t - len(o["ids"])) for o in chunk])
            mask = torch.tensor([[1] * len(o["ids"]) + [0] * (t - len(o["ids"])) for o in chunk])
            probs = model(input_ids=ids, attention_mask=mask).logits.softmax(-1)
            want = torch.tensor([o["probs"] for o in chunk])
            worst = max(worst, (probs - want).abs().max().item())
            agree += (probs.argmax(-1) == want.argmax(-1)).sum().item()
    print(json.dumps({"class": arch, "n": len(ours), "max_abs_prob_diff": worst, "same_argmax": agree}))
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
