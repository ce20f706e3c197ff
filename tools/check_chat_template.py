#!/usr/bin/env python3
"""Dev check: transformers' `tokenizer.apply_chat_template` with the `tokenizer_config.json` that
`gpt sft` saved renders the same string, and tokenizes to the same ids, as we do.

Our side is `gpt chat --model DIR --render CONVERSATIONS.jsonl` (one {"text", "ids",
"add_generation_prompt"} line per conversation); the transformers side loads DIR with
AutoTokenizer and calls apply_chat_template(messages, tokenize=False,
add_generation_prompt=...) and then encodes the text (no special tokens added).

Usage: ~/.cache/gpt-refenv/bin/python tools/check_chat_template.py MODEL_DIR CONVERSATIONS.jsonl [GPT_BIN]
(MODEL_DIR: a `gpt sft --out` or its checkpoint/; GPT_BIN default target/release/gpt)
Exit status 0 when every conversation agrees, 1 otherwise.
"""
import json
import os
import subprocess
import sys

from transformers import AutoTokenizer


def main():
    model_dir, data = sys.argv[1], sys.argv[2]
    gpt = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "target", "release", "gpt")
    if not os.path.exists(os.path.join(model_dir, "tokenizer_config.json")):
        model_dir = os.path.join(model_dir, "checkpoint")
    out = subprocess.run([gpt, "chat", "--model", model_dir, "--render", data], check=True, capture_output=True, text=True).stdout
    ours = [json.loads(line) for line in out.splitlines() if line.strip()]
    convs = [json.loads(line)["messages"] for line in open(data) if line.strip()]
    tok = AutoTokenizer.from_pretrained(model_dir)
    bad = 0
    for i, (o, msgs) in enumerate(zip(ours, convs)):
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=o["add_generation_prompt"])
        ids = tok.encode(text, add_special_tokens=False)
        if text != o["text"] or ids != o["ids"]:
            bad += 1
            print(f"conversation {i}: differs\n  ours: {o['text']!r}\n  hf:   {text!r}\n  ids equal: {ids == o['ids']}")
    print(f"{len(ours) - bad}/{len(ours)} conversations render and tokenize identically")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
