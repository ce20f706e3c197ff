"""Makes tests/fixtures/hf_gpt2: a small random GPT-2 saved by transformers, and its outputs.

Run with the reference environment (torch + transformers + safetensors, no network):
    $HOME/.cache/gpt-refenv/bin/python tools/fixtures_hf_gpt2.py

Model: 2 layers, 32 wide, 4 heads, the full 50,257-token vocabulary, n_positions 128,
initializer_range 0.2 (so weights are not tiny), and random LayerNorm gains and biases (HF
initialises them to 1 and 0, which would hide mistakes in them). Saved with `save_pretrained`
as float16 safetensors (3 MB), so the test covers f16 loading; the reference outputs are computed
in float32 from the same f16-rounded weights.

Outputs (`expected.json` + `expected.safetensors`), per prompt:
- `ids`: the GPT-2 tokenizer's ids (HF's `GPT2Tokenizer` on our bundled vocab/merges);
- `last_logits` (V): the full logits at the last position;
- `sub_logits` (T, 512): logits at every position for 512 fixed vocabulary indices (`sub_idx`);
- `logprobs`: log p(ids[j] | ids[:j]) for j ≥ 1;
- `greedy`: 20 tokens of `generate(do_sample=False)`.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2")
TOK = os.path.join(ROOT, "tokenizer", "data", "gpt2")

PROMPTS = [
    "Hello, my dog is cute",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time",
    " café naïve 🙂 日本語",
    "<|endoftext|>In 1905, Einstein",
]


def main():
    torch.manual_seed(1234)
    cfg = GPT2Config(
        vocab_size=50257,
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                else:
                    p.copy_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    model = model.half()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    model = model.float().eval()

    tok = GPT2Tokenizer(os.path.join(TOK, "vocab.json"), os.path.join(TOK, "merges.txt"))
    g = torch.Generator().manual_seed(0)
    sub_idx = torch.randperm(50257, generator=g)[:512].sort().values
    meta = {"sub_idx": sub_idx.tolist(), "prompts": []}
    tensors = {}
    for i, text in enumerate(PROMPTS):
        ids = tok.encode(text)
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].float()  # (T, V)
            lp = torch.log_softmax(logits.double(), -1)
            logprobs = [lp[j - 1, ids[j]].item() for j in range(1, len(ids))]
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=20,
                do_sample=False,
                pad_token_id=50256,
                eos_token_id=None,
            )
        greedy = out[0, len(ids):].tolist()
        tensors[f"p{i}.last_logits"] = logits[-1].contiguous()
        tensors[f"p{i}.sub_logits"] = logits[:, sub_idx].contiguous()
        meta["prompts"].append(
            {"text": text, "ids": ids, "logprobs": logprobs, "greedy": greedy}
        )
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
