"""Language-model head + cross-entropy for training, two ways.

``head_cross_entropy`` (the default of ``gpt.bench``): the head over the *padded* vocabulary, whose
width is a multiple of 64 (50304 for GPT-2), with the padding columns set to -inf before a float32
cross-entropy. That is exactly the cross-entropy over the real vocabulary (exp(-inf) = 0 adds nothing to
the normaliser), but under ``torch.compile`` the mask, the upcast and the log-softmax fuse into the
aligned matmul's consumer, instead of first slicing the logits to 50257 columns, an unaligned copy.
Measured on one H100 (gpt2, batch 16 x 1024, bf16, compiled): see the README's benchmark table.

``linear_cross_entropy(fused=True)``: Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``, which never
holds the logits (chunked Triton kernels computing the gradients in the forward). Its launcher does not
trace under ``torch.compile`` (FakeTensor addmm, ``.item()``), so it runs eagerly between compiled graphs;
measured in the same setting it made the step 2.2x slower, so it is offered for memory, not speed.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


_liger: dict = {}  # ignore_index -> loss module; a plain dict that Dynamo reads without tracing an import


def _liger_loss(ignore_index: int):
    if ignore_index not in _liger:
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            _liger[ignore_index] = None
        else:
            _liger[ignore_index] = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="mean")
    return _liger[ignore_index]


def fused_available() -> bool:
    return torch.cuda.is_available() and _liger_loss(-100) is not None


def head_cross_entropy(hidden: Tensor, padded_weight: Tensor, vocab_size: int, targets: Tensor,
                       ignore_index: int = -100) -> Tensor:
    """mean over non-ignored t of -log softmax((hidden @ W.T)[:vocab_size])[t], computed over all padded rows of
    W (padded_vocab_size, C) with the columns >= vocab_size masked to -inf: hidden (B, T, C), targets (B, T)."""
    logits = _at_least_float32(F.linear(hidden, padded_weight))  # (B, T, padded_vocab_size)
    if padded_weight.size(0) > vocab_size:
        pad = torch.arange(padded_weight.size(0), device=logits.device) >= vocab_size
        logits = logits.masked_fill(pad, float("-inf"))
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -100,
                         fused: bool = True) -> Tensor:
    """mean over non-ignored t of -log softmax(hidden @ weight.T)[t]: hidden (B, T, C), weight (V, C), targets (B, T).

    ``weight`` holds exactly the vocabulary's rows (slice away padded rows first: they are not tokens).
    """
    h, t = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    loss_fn = _liger_loss(ignore_index) if fused and hidden.is_cuda else None
    if loss_fn is not None:
        return _eager(loss_fn, weight, h, t)
    return F.cross_entropy(_at_least_float32(F.linear(h, weight)), t, ignore_index=ignore_index)


def _at_least_float32(logits: Tensor) -> Tensor:
    """bf16/fp16 logits up to float32 for the log-sum-exp; float64 stays float64 (``.float()`` would round it)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@torch.compiler.disable  # Liger's Triton launcher does not trace (FakeTensor addmm, .item()); run it eagerly
def _eager(loss_fn, weight: Tensor, h: Tensor, t: Tensor) -> Tensor:
    return loss_fn(weight, h, t)
