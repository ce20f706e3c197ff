"""transformers side of `gpt bench generate --vs-transformers`.

Loads the checkpoint directory that the Rust side wrote (f32 GPT-2), runs greedy `generate` on the
given prompt ids with the given threads, and prints one JSON object: decode and prefill tokens/s
(batch 1), batch decode tokens/s, and the greedy ids (to check both produce the same tokens).

Decode time = time(generate N new tokens) - time(generate 1 new token), over N - 1 tokens, so
the prefill is not counted; prefill tokens/s = prompt tokens / time of a single forward.
"""

import argparse
import json
import time

import torch
from transformers import GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt", required=True, help="JSON list with one list of ids")
    ap.add_argument("--batch-prompts", required=True, help="JSON list of lists of ids")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = GPT2LMHeadModel.from_pretrained(a.model, dtype=torch.float32).eval()
    x1 = torch.tensor(json.loads(a.prompt))
    xb = torch.tensor(json.loads(a.batch_prompts))

    def gen(x, n):
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=50256,
                eos_token_id=None,
            )
            return time.perf_counter() - t0, out

    gen(x1, 4)  # warm-up
    t1 = min(gen(x1, 1)[0] for _ in range(a.reps))
    tn, out = min((gen(x1, a.new_tokens) for _ in range(a.reps)), key=lambda r: r[0])
    with torch.inference_mode():
        tp = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            model(x1)
            tp.append(time.perf_counter() - t0)
    tb1 = gen(xb, 1)[0]
    tbn = gen(xb, a.new_tokens)[0]
    res = {
        "decode_tokens_per_sec": (a.new_tokens - 1) / (tn - t1),
        "prefill_tokens_per_sec": x1.shape[1] / min(tp),
        "batch_decode_tokens_per_sec": xb.shape[0] * (a.new_tokens - 1) / (tbn - tb1),
        "ids": out[0, x1.shape[1]:].tolist(),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
