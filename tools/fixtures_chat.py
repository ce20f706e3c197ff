#!/usr/bin/env python3
"""Fixtures for chat training (SFT, DPO, reward model), with TRL 1.16.0 as the outside reference.

Everything runs on one tiny random GPT-2 in `transformers` (2 layers, 32 wide, 4 heads, 32
positions, 67 ids: odd on purpose, dropout 0, tied LM head) and a character tokenizer whose chat
template carries `{% generation %}` markers, so TRL builds its own assistant masks. For each
objective the script
  - lets TRL build the batch (`SFTTrainer` / `DPOTrainer` / `RewardTrainer` dataset preparation
    and data collator, from the conversational records below) and compute the loss
    (`trainer.compute_loss`) and its gradients;
  - recomputes the same numbers in float64 from the logits of the same HF model, line by line
    as TRL does (the TRL lines are cited where it happens), and asserts the two agree;
  - stores the float64 numbers (tensors as float32) and the exact batch.
The float64 recomputation is what gets stored because TRL's SFT and DPO losses go through its
fused LM head (`trl.trainer.utils.add_fused_lm_head`, `trl.kernels.ChunkedLogProbFunction`),
which does the log-softmax in float32 even for a float64 model: the stored values are the
accurate ones, and TRL's own call checks that they follow TRL's conventions. The reward model
has no fused head, so its TRL call is float64 throughout and is stored as computed.

Writes tests/fixtures/chat/ (layout and tolerances in its README.md):
  policy/, reference/        HF GPT-2 directories (config.json + model.safetensors)
  vocab.json                 the 67 token strings and the chat template
  sft.json, sft_grads.safetensors
  dpo_{sigmoid,ipo,hinge}.json, dpo_{...}_grads.safetensors
  reward.json, reward_score.safetensors, reward_grads.safetensors
Run with the reference environment (no network; 10-25 s on two busy cores):
    $HOME/.cache/gpt-refenv/bin/python tools/fixtures_chat.py
"""

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat")
POLICY = os.path.join(OUT, "policy")
REFERENCE = os.path.join(OUT, "reference")
TRL_VERSION = "1.16.0"  # the conventions below were read from this version's source
BETA = 0.1
SEED = 1234
REF_SEED = 0  # the first seed whose reference puts the DPO pairs in every regime (asserted in `dpo`)

# ---------------------------------------------------------------------------------------------
# tokenizer: one id per character, then the special tokens (names as in src/chat/template.rs)

CHARS = list(" !',.?") + [chr(c) for c in range(ord("a"), ord("z") + 1)]
CHARS += [chr(c) for c in range(ord("A"), ord("Z") + 1)] + list("0123")
SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>", "<|pad|>"]
VOCAB = CHARS + SPECIALS
V = len(VOCAB)  # 67
EOS, PAD = VOCAB.index("<|endoftext|>"), VOCAB.index("<|pad|>")

# src/chat/template.rs DEFAULT_TEMPLATE without its "\n" after the role token (n_positions = 32
# must hold the three packed SFT examples), with the assistant's answer and its end-of-turn token
# inside {% generation %}: what TRL's assistant_only_loss trains.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def make_tokenizer():
    """A fresh tokenizer (the trainers set attributes on the one they are given)."""
    vocab = {t: i for i, t in enumerate(VOCAB)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per character
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|pad|>")
    tok.chat_template = CHAT_TEMPLATE
    assert len(tok) == V and tok.eos_token_id == EOS and tok.pad_token_id == PAD
    return tok


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# Three demonstrations of different lengths, one with two assistant turns; 8 + 14 + 9 = 31 tokens
# so that the packed row fits n_positions.
SFT_RECORDS = [
    {"messages": [user("Hi"), assistant("yo")]},
    {"messages": [user("a"), assistant("b"), user("c?"), assistant("ok")]},
    {"messages": [user("Why"), assistant("no")]},
]

# Preference pairs in TRL's conversational prompt/chosen/rejected form (DPO and reward model).
PAIRS = [
    {"prompt": [user("Hi")], "chosen": [assistant("hello")], "rejected": [assistant("no")]},
    {"prompt": [user("Sky?")], "chosen": [assistant("blue")], "rejected": [assistant("green!")]},
    {"prompt": [user("ok")], "chosen": [assistant("Yes.")], "rejected": [assistant("yes")]},
]

# ---------------------------------------------------------------------------------------------
# models


def config():
    return GPT2Config(
        vocab_size=V,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )


def make_models():
    """policy: HF's init (std 0.02) plus random LayerNorm gains/biases and linear biases (HF sets
    them to 1 and 0, which would hide mistakes in them). reference: policy + 0.01 N(0, 1) on every
    tensor and + 0.5 N(0, 1) on wte (also the tied LM head), so that the log-ratios are large
    enough for the three pairs to land in different regimes (see `dpo`: one hinge pair past the
    margin, one inside it, one the reference prefers)."""
    torch.manual_seed(SEED)
    policy = GPT2LMHeadModel(config()).eval()
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    reference = GPT2LMHeadModel(config()).eval()
    reference.load_state_dict(policy.state_dict())
    g = torch.Generator().manual_seed(REF_SEED)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.add_((0.5 if name == "transformer.wte.weight" else 0.01) * torch.randn(p.shape, generator=g))
    for d, m in ((POLICY, policy), (REFERENCE, reference)):
        shutil.rmtree(d, ignore_errors=True)
        m.save_pretrained(d, safe_serialization=True)


def load_lm(path):
    """A fresh float64 copy of a saved LM (the f32 weights cast exactly)."""
    return GPT2LMHeadModel.from_pretrained(path, dtype=torch.float64).train()


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def max_rel_diff(ga, gb):
    """max over tensors of max|a - b| / max|b| (the gradient tolerance the README gives)."""
    assert ga.keys() == gb.keys(), (sorted(ga), sorted(gb))
    return max(((ga[k] - gb[k]).abs().max() / gb[k].abs().max().clamp(min=1e-30)).item() for k in ga)


def common_args(tmp):
    return dict(
        output_dir=tmp,
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL's configs default to bf16=True
        gradient_checkpointing=False,  # TRL's configs default to True
        seed=SEED,
    )


# ---------------------------------------------------------------------------------------------
# SFT


def lm_loss_f64(model, labels, **inputs):
    """HF's causal-LM loss (mean over all non-ignored shifted tokens of the batch), from float64
    logits: `transformers`' own `ForCausalLMLoss` casts the logits to float32 first."""
    logits = model(**inputs, use_cache=False).logits  # (B, T, V); a cache would turn off packing
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def sft(tmp, check):
    tok = make_tokenizer()
    masks = [
        tok.apply_chat_template(
            r["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        for r in SFT_RECORDS
    ]

    def trainer(padding_free):
        args = SFTConfig(
            **common_args(tmp),
            assistant_only_loss=True,
            padding_free=padding_free,
            max_length=None,  # padding_free without packing requires it; nothing here is truncated
            per_device_train_batch_size=3,
        )
        return SFTTrainer(
            model=load_lm(POLICY),
            args=args,
            train_dataset=Dataset.from_list(SFT_RECORDS),
            processing_class=make_tokenizer(),
        )

    def trl_loss(t):
        rows = [t.train_dataset[i] for i in range(len(SFT_RECORDS))]
        batch = t.data_collator(rows)
        loss = t.compute_loss(t.model, dict(batch))
        loss.backward()
        return rows, batch, loss.item(), grads_of(t.model)

    # padded batch, TRL
    rows, batch, trl_padded, trl_grads = trl_loss(trainer(False))
    for r, m in zip(rows, masks):
        assert r["input_ids"] == m["input_ids"]
        assert r["labels"] == [i if a else -100 for i, a in zip(m["input_ids"], m["assistant_masks"])]
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    B, T = ids.shape
    assistant_masks = torch.zeros(B, T, dtype=torch.long)
    for b, m in enumerate(masks):
        assistant_masks[b, : len(m["assistant_masks"])] = torch.tensor(m["assistant_masks"])

    # padded batch, float64
    model = load_lm(POLICY)
    loss = lm_loss_f64(model, labels, input_ids=ids, attention_mask=attn)
    loss.backward()
    grads = grads_of(model)
    hf_loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss.item()  # float32 logits inside

    # packed (padding-free) batch, TRL
    _, packed, trl_packed, trl_packed_grads = trl_loss(trainer(True))
    assert "attention_mask" not in packed
    # packed, float64: with position_ids and no attention_mask, transformers finds the sequence
    # starts (position_ids restarting at 0) and builds the block-diagonal causal mask itself
    model_p = load_lm(POLICY)
    loss_p = lm_loss_f64(
        model_p, packed["labels"], input_ids=packed["input_ids"], position_ids=packed["position_ids"]
    )
    loss_p.backward()
    grads_p = grads_of(model_p)

    assert abs(loss_p.item() - loss.item()) < 1e-6, (loss_p.item(), loss.item())
    assert max_rel_diff(grads_p, grads) < 1e-9
    check("sft trl padded", abs(trl_padded - loss.item()), 1e-6)
    check("sft trl packed", abs(trl_packed - loss.item()), 1e-6)
    check("sft hf labels=", abs(hf_loss - loss.item()), 1e-6)
    check("sft trl grads", max_rel_diff(trl_grads, grads), 1e-5)
    check("sft trl packed grads", max_rel_diff(trl_packed_grads, grads), 1e-5)

    n_tokens = int((labels[:, 1:] != -100).sum())
    meta = {
        "trl_version": trl.__version__,
        "records": SFT_RECORDS,
        "rendered": [tok.apply_chat_template(r["messages"], tokenize=False) for r in SFT_RECORDS],
        "lengths": [len(m["input_ids"]) for m in masks],
        "pad_token_id": PAD,
        "attn_implementation": model.config._attn_implementation,
        "input_ids": ids.tolist(),
        "attention_mask": attn.tolist(),
        "assistant_masks": assistant_masks.tolist(),
        "labels": labels.tolist(),
        "n_loss_tokens": n_tokens,
        "loss": loss.item(),
        "trl_loss": trl_padded,
        "packed": {
            "input_ids": packed["input_ids"].tolist(),
            "position_ids": packed["position_ids"].tolist(),
            "labels": packed["labels"].tolist(),
            "cu_seq_lens": packed["cu_seq_lens_q"].tolist(),
            "loss": loss_p.item(),
            "trl_loss": trl_packed,
        },
    }
    dump_json("sft.json", meta)
    save_grads("sft_grads.safetensors", grads)
    return loss.item()


# ---------------------------------------------------------------------------------------------
# DPO


def seq_logps(model, ids, attn, completion_mask):
    """Sum of log p(token | prefix) over the completion tokens of each row: TRL 1.16.0
    `DPOTrainer._compute_loss`, dpo_trainer.py L1298 `labels = input_ids.masked_fill(completion_mask
    == 0, -100)`, the fused head scoring `labels[:, 1:]` from hidden states `[:, :-1]` with 0 on
    ignored positions (utils.py L1617-1660), then L1304 `logps = per_token_logps.sum(dim=1)`."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]  # (2B, T-1, V)
    lp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * completion_mask[:, 1:]).sum(1)  # (2B,)


def dpo_f64(policy, reference, batch, loss_type):
    """TRL 1.16.0 `DPOTrainer._compute_loss` (dpo_trainer.py) with the default f_divergence_type
    "reverse_kl", ld_alpha None, use_weighting False, one loss type of weight 1."""
    ids, attn, cm = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    logps = seq_logps(policy, ids, attn, cm)
    with torch.no_grad():
        ref_logps = seq_logps(reference, ids, attn, cm)
    chosen, rejected = logps.chunk(2)  # L1316: the batch is [chosen rows; rejected rows]
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    chosen_logratios = chosen - ref_chosen  # L1350
    rejected_logratios = rejected - ref_rejected  # L1351
    delta = chosen_logratios - rejected_logratios  # L1383 (scores = logratios for reverse_kl)
    if loss_type == "sigmoid":
        per = -F.logsigmoid(BETA * delta)  # L1388
    elif loss_type == "hinge":
        per = torch.relu(1 - BETA * delta)  # L1391
    elif loss_type == "ipo":
        # L1399-1404: each log-ratio divided by its completion's token count (the unshifted
        # completion_mask, so every completion token counts), then (delta - 1/(2 beta))^2
        chosen_mask, rejected_mask = cm.chunk(2)
        chosen_avg = chosen_logratios / chosen_mask.sum(1).clamp(min=1.0)
        rejected_avg = rejected_logratios / rejected_mask.sum(1).clamp(min=1.0)
        per = (chosen_avg - rejected_avg - 1 / (2 * BETA)) ** 2
    else:
        raise ValueError(loss_type)
    loss = per.mean()  # L1528
    chosen_rewards = BETA * chosen_logratios.detach()  # L1582-1597
    rejected_rewards = BETA * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).double().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
    }
    logs = {
        "chosen_logps": chosen.tolist(),
        "rejected_logps": rejected.tolist(),
        "ref_chosen_logps": ref_chosen.tolist(),
        "ref_rejected_logps": ref_rejected.tolist(),
    }
    return loss, metrics, logs, (chosen_rewards - rejected_rewards)


METRICS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"]


def dpo_trainer(tmp, loss_type, ref_model):
    args = DPOConfig(
        **common_args(tmp),
        beta=BETA,
        loss_type=[loss_type],
        max_length=None,
        per_device_train_batch_size=3,
    )
    return DPOTrainer(
        model=load_lm(POLICY),
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=make_tokenizer(),
    )


def dpo_trl(t):
    rows = [t.train_dataset[i] for i in range(len(PAIRS))]
    batch = t.data_collator(rows)
    t.model.train()
    loss = t.compute_loss(t.model, dict(batch))
    loss.backward()
    metrics = {k: t._metrics["train"][k][-1] for k in METRICS}
    return rows, batch, loss.item(), metrics, grads_of(t.model)


def dpo(tmp, check):
    # step 0: TRL's default reference (ref_model=None: a second copy loaded from the policy's
    # path) equals the policy, so every log-ratio is 0: sigmoid gives ln 2, ipo (1/(2 beta))^2,
    # hinge 1, and all rewards are 0 (accuracy 0 too: TRL counts chosen > rejected strictly)
    step0 = {}
    for loss_type, want in (("sigmoid", math.log(2)), ("ipo", (1 / (2 * BETA)) ** 2), ("hinge", 1.0)):
        _, batch0, loss0, metrics0, _ = dpo_trl(dpo_trainer(tmp, loss_type, None))
        check(f"dpo {loss_type} step 0 trl", abs(loss0 - want) / want, 1e-7)
        assert all(metrics0[k] == 0 for k in METRICS), metrics0
        loss0, metrics0, _, _ = dpo_f64(load_lm(POLICY), load_lm(POLICY), batch0, loss_type)
        assert abs(loss0.item() - want) < 1e-12 and all(v == 0 for v in metrics0.values()), (loss0, metrics0)
        step0[loss_type] = {"loss": loss0.item(), **metrics0}

    results = {}
    for loss_type in ("sigmoid", "ipo", "hinge"):
        rows, batch, trl_l, trl_metrics, trl_grads = dpo_trl(dpo_trainer(tmp, loss_type, load_lm(REFERENCE)))
        policy = load_lm(POLICY)
        loss, metrics, logs, margins = dpo_f64(policy, load_lm(REFERENCE), batch, loss_type)
        loss.backward()
        grads = grads_of(policy)
        # every regime is covered: a pair the reference prefers (beta * delta < 0), one inside the
        # hinge margin (0 < beta * delta < 1) and one past it (relu inactive); and no accuracy or
        # relu branch depends on rounding
        assert (margins < 0).any() and ((margins > 0) & (margins < 1)).any() and (margins > 1).any(), margins
        assert margins.abs().min() > 1e-3 and (margins - 1).abs().min() > 1e-3, margins
        check(f"dpo {loss_type} trl loss", abs(trl_l - loss.item()) / max(1.0, abs(loss.item())), 1e-6)
        for k in METRICS:
            check(f"dpo {loss_type} trl {k}", abs(trl_metrics[k] - metrics[k]), 1e-6)
        check(f"dpo {loss_type} trl grads", max_rel_diff(trl_grads, grads), 1e-5)
        meta = {
            "trl_version": trl.__version__,
            "loss_type": loss_type,
            "beta": BETA,
            "records": PAIRS,
            "prompt_ids": [r["prompt_ids"] for r in rows],
            "chosen_ids": [r["chosen_ids"] for r in rows],
            "rejected_ids": [r["rejected_ids"] for r in rows],
            "pad_token_id": PAD,
            "input_ids": batch["input_ids"].tolist(),
            "attention_mask": batch["attention_mask"].tolist(),
            "completion_mask": batch["completion_mask"].tolist(),
            **logs,
            "loss": loss.item(),
            "metrics": metrics,
            "trl_loss": trl_l,
            "trl_metrics": trl_metrics,
            "step0": step0[loss_type],
        }
        dump_json(f"dpo_{loss_type}.json", meta)
        save_grads(f"dpo_{loss_type}_grads.safetensors", grads)
        results[loss_type] = (loss.item(), metrics["rewards/accuracies"])
    return results


# ---------------------------------------------------------------------------------------------
# reward model


def load_rm(score):
    """GPT2ForSequenceClassification(num_labels=1) = the policy trunk + the given score.weight."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rm = GPT2ForSequenceClassification.from_pretrained(POLICY, num_labels=1, dtype=torch.float64)
    with torch.no_grad():
        rm.score.weight.copy_(score)
    rm.config.pad_token_id = PAD
    return rm.train()


def reward(tmp, check):
    g = torch.Generator().manual_seed(SEED + 2)
    score = (0.2 * torch.randn(1, 32, generator=g)).float()  # stored f32, used exactly in f64
    args = RewardConfig(**common_args(tmp), max_length=None, per_device_train_batch_size=3)
    t = RewardTrainer(
        model=load_rm(score.double()),
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=make_tokenizer(),
    )
    rows = [t.train_dataset[i] for i in range(len(PAIRS))]
    batch = t.data_collator(rows)
    loss = t.compute_loss(t.model, dict(batch))  # float64 throughout: no fused head here
    loss.backward()
    grads = grads_of(t.model)
    m = t._metrics["train"]

    # the same by hand: hidden state at the last non-pad token, times score.weight
    ids, attn = batch["input_ids"], batch["attention_mask"]
    rm = load_rm(score.double())
    h = rm.transformer(input_ids=ids, attention_mask=attn).last_hidden_state  # (2B, T, C)
    last = attn.sum(1) - 1  # right padding, and no pad id inside a sequence
    assert ((ids != PAD).long().sum(1) == attn.sum(1)).all()
    r = (h[torch.arange(len(ids)), last] @ rm.score.weight.t()).squeeze(-1)
    rc, rr = r.chunk(2)
    loss_hand = -F.logsigmoid(rc - rr).mean()
    check("reward by hand", abs(loss_hand.item() - loss.item()), 1e-12)
    assert (rc - rr).abs().min() > 1e-4, rc - rr
    accuracy = (rc > rr).double().mean().item()
    margin = (rc - rr).mean().item()
    check("reward trl accuracy", abs(m["accuracy"][-1] - accuracy), 1e-7)  # a float32 mean in TRL
    check("reward trl margin", abs(m["margin"][-1] - margin), 1e-9)

    meta = {
        "trl_version": trl.__version__,
        "records": PAIRS,
        "chosen_ids": [row["chosen_ids"] for row in rows],
        "rejected_ids": [row["rejected_ids"] for row in rows],
        "pad_token_id": PAD,
        "input_ids": ids.tolist(),
        "attention_mask": attn.tolist(),
        "pool_index": last.tolist(),
        "rewards_chosen": rc.tolist(),
        "rewards_rejected": rr.tolist(),
        "loss": loss.item(),
        "accuracy": accuracy,
        "margin": margin,
    }
    dump_json("reward.json", meta)
    save_file({"score.weight": score.contiguous()}, os.path.join(OUT, "reward_score.safetensors"))
    save_grads("reward_grads.safetensors", grads)
    return loss.item(), accuracy


# ---------------------------------------------------------------------------------------------
# output


def save_grads(name, grads):
    save_file({k: v.float().contiguous() for k, v in grads.items()}, os.path.join(OUT, name))


def _fmt(x, indent):
    """JSON with whatever fits on one line on one line (batches read as matrices)."""
    flat = json.dumps(x, ensure_ascii=False)
    pad = " " * indent
    if len(flat) + indent <= 100 or not isinstance(x, (dict, list)) or not x:
        return flat
    if isinstance(x, dict):
        items = [f"{pad} {json.dumps(k)}: {_fmt(v, indent + 1)}" for k, v in x.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if any(isinstance(v, (list, dict)) for v in x):
        items = [pad + " " + _fmt(v, indent + 1) for v in x]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return flat


def dump_json(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        f.write(_fmt(obj, 0) + "\n")


def main():
    if trl.__version__ != TRL_VERSION:
        sys.exit(f"TRL {trl.__version__} found; these fixtures pin TRL {TRL_VERSION}'s conventions")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    os.makedirs(OUT, exist_ok=True)
    make_models()
    dump_json("vocab.json", {"tokens": VOCAB, "eos_token": "<|endoftext|>", "pad_token": "<|pad|>",
                             "chat_template": CHAT_TEMPLATE})

    worst = {}

    def check(what, diff, tol):
        assert diff <= tol, f"{what}: {diff:.3g} > {tol:.3g}"
        worst[what] = diff

    with tempfile.TemporaryDirectory() as tmp:
        sft_loss = sft(tmp, check)
        dpo_res = dpo(tmp, check)
        rm_loss, rm_acc = reward(tmp, check)
    print(f"sft loss {sft_loss:.6f}")
    for k, (l, a) in dpo_res.items():
        print(f"dpo {k} loss {l:.6f} accuracy {a:.3f}")
    print(f"reward loss {rm_loss:.6f} accuracy {rm_acc:.3f}")
    print("TRL vs float64:", ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
