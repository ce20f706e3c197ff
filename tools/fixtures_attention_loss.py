"""PyTorch fixtures for the attention, cross-entropy and AdamW kernels.

Writes float32 inputs, outputs and gradients to tests/fixtures/attn_loss/*.safetensors, read by
tests/torch_attn_loss.rs. Run from the repository root with the reference environment:

    $HOME/.cache/gpt-refenv/bin/python tools/fixtures_attention_loss.py

Layouts match the Rust kernels: q (B, Tq, C), k and v (B, Tk, C) with C = NH*HS and head h in
columns h*HS..(h+1)*HS; lse (B, NH, Tq); key_mask (B, Tk) uint8, 1 = attend. Upstream gradients
(`dout`, `dloss`) are random so that every path of the backward is exercised.
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "attn_loss")


def save(name, tensors):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT, name + ".safetensors"))
    print("wrote", name, sorted(tensors))


def attention_case(name, b, tq, tk, nh, hs, causal, key_mask=None, seed=0):
    """Reference: F.scaled_dot_product_attention with a boolean mask combining the
    bottom-right causal mask (key j visible to query i iff j <= i + tk - tq) and key padding."""
    g = torch.Generator().manual_seed(seed)
    c = nh * hs
    q = torch.randn(b, tq, c, generator=g, requires_grad=True)
    k = torch.randn(b, tk, c, generator=g, requires_grad=True)
    v = torch.randn(b, tk, c, generator=g, requires_grad=True)
    dout = torch.randn(b, tq, c, generator=g)

    allowed = torch.ones(b, 1, tq, tk, dtype=torch.bool)
    if causal:
        i = torch.arange(tq)[:, None]
        j = torch.arange(tk)[None, :]
        allowed = allowed & (j <= i + tk - tq)
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]
    assert allowed.any(-1).all(), "fixtures keep every row partly unmasked (PyTorch gives NaN)"

    def heads(x, t):  # (B, T, C) -> (B, NH, T, HS)
        return x.view(b, t, nh, hs).transpose(1, 2)

    out4 = F.scaled_dot_product_attention(heads(q, tq), heads(k, tk), heads(v, tk), attn_mask=allowed)
    out = out4.transpose(1, 2).reshape(b, tq, c)
    out.backward(dout)
    with torch.no_grad():
        s = heads(q, tq) @ heads(k, tk).transpose(-2, -1) / hs**0.5
        lse = torch.logsumexp(s.masked_fill(~allowed, float("-inf")), dim=-1)  # (B, NH, Tq)
    t = dict(q=q, k=k, v=v, dout=dout, out=out, lse=lse, dq=q.grad, dk=k.grad, dv=v.grad)
    t["dims"] = torch.tensor([b, tq, tk, nh, hs, int(causal)], dtype=torch.int64)
    if key_mask is not None:
        t["key_mask"] = key_mask.to(torch.uint8)
    save(name, t)


def crossentropy_case(name, n, v, ignore_index, label_smoothing, ignored_rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(n, v, generator=g)).requires_grad_(True)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[ignored_rows] = ignore_index
    dloss = torch.rand((), generator=g) + 0.5
    kw = dict(ignore_index=ignore_index, label_smoothing=label_smoothing)
    losses = F.cross_entropy(logits, targets, reduction="none", **kw)
    loss = F.cross_entropy(logits, targets, **kw)
    (loss * dloss).backward()
    save(
        name,
        dict(
            logits=logits,
            targets=targets,
            losses=losses,
            loss=loss,
            dloss=dloss,
            dlogits=logits.grad,
            config=torch.tensor([n, v, ignore_index], dtype=torch.int64),
            label_smoothing=torch.tensor(label_smoothing, dtype=torch.float64),
        ),
    )


def adamw_case(name, seed=0):
    """3 steps of torch.optim.AdamW on two tensors (param groups: w decays, b does not), each
    step after clip_grad_norm_(max_norm=1.0) of the given (pre-clip) gradients."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 5, generator=g).requires_grad_(True)
    b = torch.randn(5, generator=g).requires_grad_(True)
    t = dict(w0=w.clone(), b0=b.clone())
    opt = torch.optim.AdamW(
        [dict(params=[w], weight_decay=0.1), dict(params=[b], weight_decay=0.0)],
        lr=1e-2,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    for step in range(1, 4):
        # Step 2's gradients are small so that clipping is a no-op there.
        scale = 0.05 if step == 2 else 1.0
        gw = scale * torch.randn(4, 5, generator=g)
        gb = scale * torch.randn(5, generator=g)
        t[f"grad_w{step}"], t[f"grad_b{step}"] = gw.clone(), gb.clone()
        w.grad, b.grad = gw, gb
        norm = torch.nn.utils.clip_grad_norm_([w, b], max_norm=1.0)
        opt.step()
        t[f"norm{step}"] = norm.reshape(1)
        t[f"w{step}"], t[f"b{step}"] = w.clone(), b.clone()
    save(name, t)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    attention_case("attn_causal", b=2, tq=7, tk=7, nh=3, hs=5, causal=True, seed=1)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    attention_case("attn_padded", b=3, tq=7, tk=7, nh=3, hs=5, causal=False, key_mask=pad, seed=2)
    attention_case("attn_causal_padded", b=3, tq=7, tk=7, nh=3, hs=5, causal=True, key_mask=pad, seed=3)
    cross = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1, 0, 0, 0]])
    attention_case("attn_cross", b=2, tq=5, tk=9, nh=3, hs=5, causal=False, key_mask=cross, seed=4)
    attention_case("attn_decode", b=2, tq=3, tk=8, nh=3, hs=5, causal=True, seed=5)
    crossentropy_case("ce_plain", n=7, v=13, ignore_index=-100, label_smoothing=0.0, ignored_rows=[], seed=6)
    crossentropy_case("ce_ignore_smooth", n=7, v=13, ignore_index=-100, label_smoothing=0.1, ignored_rows=[1, 4], seed=7)
    crossentropy_case("ce_ignore_custom", n=7, v=13, ignore_index=3, label_smoothing=0.0, ignored_rows=[0, 6], seed=8)
    adamw_case("adamw", seed=9)


if __name__ == "__main__":
    main()
