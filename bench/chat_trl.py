#!/usr/bin/env python3
"""TRL side of `gpt bench chat`: SFT with `SFTTrainer` or DPO with `DPOTrainer` (TRL 1.16,
transformers 5) on one of our chat models (a Hugging Face GPT-2 directory with its tokenizer and
chat template), configured the way a TRL user training an f32 model on a CPU would, and matched
to `gpt sft` / `gpt dpo`'s recipe:

  - f32 (TRL's configs default to bf16=True and gradient_checkpointing=True: both off), SDPA
    attention, dropout off (DPO disables it itself; for SFT the config's dropouts are set to 0);
  - AdamW (0.9, 0.999, 1e-8), fused (`adamw_torch_fused`, supported on CPU since torch 2.4; the
    plain `adamw_torch` if this torch refuses), weight decay 0, clip 1.0, linear decay to 0
    after --warmup-steps;
  - max_length = the model's context; SFT: `assistant_only_loss` on conversational records
    (the template gets `{% generation %}` markers, checked to render the same text) or the
    completion of prompt/completion records, right padding, or `padding_free` with
    --padding-free; DPO: sigmoid loss, β, `precompute_ref_log_probs=True` (the reference
    log-probabilities are computed once before training, as `gpt dpo` does), truncation
    `keep_end` (as ours: the prompt loses its start);
  - the records are read in file order (`train_sampling_strategy="sequential"`): the harness
    writes them in the order our side visits them, so both train on the same batches;
  - no evaluation, no saving, dataloader workers 0, `torch.set_num_threads(--threads)`.

Prints one JSON line per optimizer step to stdout, flushed:
  {"step", "loss", "tokens" (real tokens of the batch), "examples", "optim"}

  ~/.cache/gpt-refenv/bin/python bench/chat_trl.py --method sft --model CHAT --data trl_sft.jsonl \
      --max-steps 22 --batch-size 8 --lr 1e-4 --warmup-steps 1 --threads 2
"""
import argparse
import json
import os
import sys
import tempfile

import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import trl

# Our default template (src/chat/template.rs, DEFAULT_TEMPLATE) with TRL's generation markers
# around each assistant answer and its end-of-turn token: what `assistant_only_loss` needs.
MARKED_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
PROBE = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Because."},
]


def mark_template(tok, model_dir):
    """Gives the tokenizer a template with generation markers that renders as its own."""
    if "{% generation %}" in (tok.chat_template or "") or "{%- generation %}" in (tok.chat_template or ""):
        return
    for gen in (False, True):
        msgs = PROBE[:-1] if gen else PROBE
        own = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        marked = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, chat_template=MARKED_TEMPLATE)
        if own != marked:
            sys.exit(
                f"{model_dir}: the chat template has no {{% generation %}} markers, which TRL's assistant_only_loss "
                "needs, and is not the template of `gpt sft`; add the markers to it"
            )
    tok.chat_template = MARKED_TEMPLATE


def fused_adamw_works():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.ones(4)
    try:
        torch.optim.AdamW([p], lr=1e-3, fused=True).step()
        return True
    except (RuntimeError, TypeError):
        return False


class StepLines(TrainerCallback):
    """One JSON line per optimizer step (logging_steps=1 logs every step)."""

    def __init__(self, tokens, examples, optim):
        self.tokens, self.examples, self.optim = tokens, examples, optim

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            line = {
                "step": state.global_step,
                "loss": logs["loss"],
                "tokens": self.tokens.pop(0) if self.tokens else None,
                "examples": self.examples,
                "optim": self.optim,
            }
            print(json.dumps(line), flush=True)


def counting(cls, tokens):
    """`cls` recording each training batch's real tokens (for tokens/s)."""

    class Counting(cls):
        def training_step(self, model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            # Padding-free batches are one row of real tokens without a mask.
            tokens.append(int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, *args, **kwargs)

    return Counting


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=["sft", "dpo"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="TRL records (JSONL), read in file order")
    ap.add_argument("--out", default=None, help="TRL's output_dir (nothing is saved)")
    ap.add_argument("--max-steps", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--padding-free", action="store_true", help="SFT: padding_free (one row of real tokens)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (TRL's default) instead of f32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()

    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(
        a.model,
        dtype=torch.float32,
        attn_implementation="sdpa",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    n_ctx = model.config.n_positions
    with open(a.data, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        sys.exit(f"{a.data}: no records")
    conversational = "messages" in records[0] or isinstance(records[0].get("prompt"), list)
    dataset = Dataset.from_list(records)

    optim = "adamw_torch_fused" if fused_adamw_works() else "adamw_torch"
    common = dict(
        output_dir=a.out or tempfile.mkdtemp(prefix="chat_trl-"),
        max_steps=a.max_steps,
        per_device_train_batch_size=a.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=a.lr,
        lr_scheduler_type="linear",
        warmup_steps=a.warmup_steps,
        optim=optim,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=a.bf16,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        train_sampling_strategy="sequential",
        use_cpu=True,
        seed=a.seed,
    )
    tokens = []
    if a.method == "sft":
        if "messages" in records[0]:
            mark_template(tok, a.model)
        cfg = trl.SFTConfig(
            **common,
            # Padding-free batches are not cut (TRL requires max_length=None there); the harness
            # gives records that fit the context.
            max_length=None if a.padding_free else n_ctx,
            padding_free=a.padding_free,
            assistant_only_loss="messages" in records[0],
            dataset_num_proc=None,
        )
        trainer = counting(trl.SFTTrainer, tokens)(model=model, args=cfg, train_dataset=dataset, processing_class=tok)
        if a.padding_free:
            longest = max(len(ids) for ids in trainer.train_dataset["input_ids"])
            if longest > n_ctx:
                sys.exit(f"{a.data}: a record has {longest} tokens, more than the context ({n_ctx}), with --padding-free")
    else:
        cfg = trl.DPOConfig(
            **common,
            max_length=n_ctx,
            truncation_mode="keep_end",
            beta=a.beta,
            loss_type=["sigmoid"],
            precompute_ref_log_probs=True,
        )
        trainer = counting(trl.DPOTrainer, tokens)(model=model, args=cfg, train_dataset=dataset, processing_class=tok)
    trainer.add_callback(StepLines(tokens, a.batch_size, optim))
    print(
        json.dumps({"method": a.method, "optim": optim, "conversational": conversational, "trl": trl.__version__,
                    "transformers": transformers.__version__, "torch": torch.__version__,
                    "threads": torch.get_num_threads()}),
        flush=True,
    )
    trainer.train()


if __name__ == "__main__":
    main()
