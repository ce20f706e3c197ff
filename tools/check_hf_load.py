#!/usr/bin/env python3
"""Dev check: a checkpoint written by `gpt train` loads in Hugging Face transformers with
GPT2LMHeadModel.from_pretrained (pre-LN) or OpenAIGPTLMHeadModel (post-LN, `--norm post`), and its
greedy continuation equals ours token for token.

Usage (reference environment from ../shared/tools/setup-ref.sh):
  cargo run --release -- train --out /tmp/hfcheck --overwrite --max-steps 200 --sample-tokens 0
  ~/.cache/gpt-refenv/bin/python tools/check_hf_load.py /tmp/hfcheck/checkpoint [gpt binary]
  cargo run --release -- train --norm post --out /tmp/hfpost --overwrite --max-steps 200 --sample-tokens 0
  ~/.cache/gpt-refenv/bin/python tools/check_hf_load.py /tmp/hfpost/checkpoint
"""
import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    ck = sys.argv[1]
    gpt_bin = sys.argv[2] if len(sys.argv) > 2 else "target/release/gpt"
    model = AutoModelForCausalLM.from_pretrained(ck)  # GPT2LMHeadModel or OpenAIGPTLMHeadModel
    model.eval()
    chars = json.load(open(f"{ck}/tokenizer_char.json"))["chars"]
    prompt = "ROMEO:\n"
    ids = [chars.index(c) for c in prompt]
    n = 40
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
        logits = model(torch.tensor([ids])).logits[0, -1]
    hf_text = "".join(chars[i] for i in out[0].tolist())
    res = subprocess.run([gpt_bin, "sample", "--model", ck, "--prompt", prompt, "--temperature", "0",
                          "--max-new-tokens", str(n)], capture_output=True, text=True, check=True)
    ours = res.stdout[:-1] if res.stdout.endswith("\n") else res.stdout
    print("loaded with transformers:", type(model).__name__, f"{sum(p.numel() for p in model.parameters())} parameters")
    print("last-position logits (transformers), first 5:", [round(x, 4) for x in logits[:5].tolist()])
    print("transformers greedy:", repr(hf_text))
    print("gpt greedy:         ", repr(ours))
    ok = hf_text == ours
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
