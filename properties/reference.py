"""The fixed-weight reference: ``gpt.GPT`` with weights drawn for a config, and the bound for comparing to it.

The differential properties load these weights into a subject (capability "reference_weights") and
compare. Two weight states:

* ``init``: the reference's own GPT-2 initialisation (N(0, 0.02) matrices, zero biases, unit gains);
* ``scaled``: every matrix (embeddings, projections, head) x20 and every vector (biases, norm gains and
  shifts) replaced by v + N(0, 0.5^2). At init the attention is almost uniform (scores ~0.03), so a sign or
  scale bug moves logits by ~1e-9; x20 makes scores O(10), softmax sharp and every bias and gain matter.
"""
from __future__ import annotations

import math

import torch

from gpt import GPT
from gpt.config import Config

SCALE = 20.0
VECTOR_STD = 0.5


def reference_model(config: Config, seed: int, scaled: bool) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config).to(torch.float64).eval()
    if scaled:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():  # a tied head is the embedding: scaled once
                if p.dim() >= 2:
                    p.mul_(SCALE)
                else:
                    p.add_(VECTOR_STD * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def score_bound(model: GPT) -> float:
    """An upper bound S on |q.k| / sqrt(head_size) over every layer, head and input, from the weights alone.

    The attention input is a norm's output g * n(x) (+ b) with ||n(x)|| <= sqrt(C) (unit RMS at most), so
    ||q|| <= ||W_q||_2 (max|g| sqrt(C) + ||b_norm||) + ||b_q|| and likewise ||k||; RoPE is a rotation and
    keeps norms; |q.k| <= ||q|| ||k||. With QK-norm, q and k are themselves RMSNorm outputs g * n(.), over
    a head's hs features (||q_h|| <= max|g| sqrt(hs)) or over all heads' (||q_h|| <= ||q|| <= max|g|
    sqrt(n_head hs), k likewise with n_query_groups), whatever the attention input: the only bound for
    post-norm blocks, whose attention reads the unnormalised stream.
    """
    c = model.config
    C, S = c.n_embd, 0.0
    for block in model.blocks:
        if c.qk_norm != "none":
            heads_q, heads_k = (1, 1) if c.qk_norm == "per_head" else (c.n_head, c.n_query_groups)
            q = block.attn.q_norm.weight.abs().max().item() * math.sqrt(heads_q * c.head_size)
            k = block.attn.k_norm.weight.abs().max().item() * math.sqrt(heads_k * c.head_size)
            S = max(S, q * k / math.sqrt(c.head_size))
            continue
        if c.norm_placement == "post":
            raise ValueError("score_bound: a post-norm block without QK-norm attends the unnormalised residual "
                             "stream, which the weights alone do not bound")
        norm = block.norm_1
        g = norm.weight.abs().max().item()
        nb = norm.bias.norm().item() if getattr(norm, "bias", None) is not None else 0.0
        x = g * math.sqrt(C) + nb
        w, b = block.attn.qkv.weight, block.attn.qkv.bias
        q_rows, kv_rows = c.n_head * c.head_size, c.n_query_groups * c.head_size
        wq, wk = w[:q_rows], w[q_rows : q_rows + kv_rows]
        bq = b[:q_rows].norm().item() if b is not None else 0.0
        bk = b[q_rows : q_rows + kv_rows].norm().item() if b is not None else 0.0
        q = torch.linalg.matrix_norm(wq, ord=2).item() * x + bq
        k = torch.linalg.matrix_norm(wk, ord=2).item() * x + bk
        S = max(S, q * k / math.sqrt(c.head_size))
    return S


def norm_backward_scale(model: GPT, run) -> float:
    """max over the reference's norm layers of sqrt(C) max|g| max|dL/dy| / min_token sigma, recorded while
    ``run()`` does a forward and backward pass of ``model``.

    A norm's backward (dy - mean(dy) - x_hat mean(dy x_hat)) g / sigma sums terms as large as
    sqrt(C) |g dy| / sigma that may cancel almost completely (LayerNorm over two features saturates to
    +-g: its exact gradient is ~ eps / sigma^3, its terms ~ 1 / sigma); its rounding error is u times that
    scale, however small the result. sigma = sqrt(var + eps) (LayerNorm) or sqrt(mean(x^2) + eps) (RMSNorm).
    """
    found, handles = [], []
    c = model.config

    def forward_hook(module, args, out):
        x = args[0].detach()
        stat = x.var(-1, unbiased=False) if c.norm_class_name == "LayerNorm" else x.pow(2).mean(-1)
        module._sigma_min = torch.sqrt(stat + c.norm_eps).min().item()

    def backward_hook(module, grad_in, grad_out):
        g = module.weight.abs().max().item() if getattr(module, "weight", None) is not None else 1.0
        found.append(math.sqrt(c.n_embd) * g * grad_out[0].abs().max().item() / module._sigma_min)

    norms = [m for m in model.modules() if type(m).__name__ in ("LayerNorm", "RMSNorm")]
    for m in norms:
        handles += [m.register_forward_hook(forward_hook), m.register_full_backward_hook(backward_hook)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return max(found, default=0.0)
