"""Language-model head + cross-entropy for training, two ways.

``head_cross_entropy`` (the default of ``gpt.bench``): the head over the *padded* vocabulary, whose
width is a multiple of 64 (50304 for GPT-2), with the padding columns set to -inf before a float32
cross-entropy. That is exactly the cross-entropy over the real vocabulary (exp(-inf) = 0 adds nothing to
the normaliser), but under ``torch.compile`` the mask, the upcast and the log-softmax fuse into the
aligned matmul's consumer, instead of first slicing the logits to 50257 columns, an unaligned copy.
Measured on one H100 (gpt2, batch 16 x 1024, bf16, compiled): see the README's benchmark table.

``linear_cross_entropy(impl=...)``: a fused linear cross-entropy that never holds the logits: ``liger``
(Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``, chunked Triton kernels computing the gradients in the
forward) or ``cce`` (Apple's cut-cross-entropy, logits kept in on-chip memory, exact gradients with
``filter_eps=None``). Neither launcher traces under ``torch.compile`` (Liger: FakeTensor addmm, ``.item()``;
CCE: a data-dependent ``numel`` test), so both run eagerly between compiled graphs. Measured on one H100
(gpt2, batch 16 x 1024, bf16, compiled, ``python -m gpt.bench --loss ...``): head 35.8 ms per step and
9,050 MiB, cce 52.4 ms and 7,528 MiB, liger 72.6 ms and 7,651 MiB. So the padded head is the default, and
the fused kernels are offered for memory (cce first: less memory and faster than liger).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .eager import outside_graphs


PACKAGES = {"liger": "liger-kernel", "cce": "cut-cross-entropy"}  # fused linear cross-entropy -> its pip name
FUSED = tuple(PACKAGES)
_loaded: dict = {}  # (impl, ignore_index) -> loss callable or None; a plain dict Dynamo reads without an import


def _fused_loss(impl: str, ignore_index: int):
    key = (impl, ignore_index)
    if key not in _loaded:
        _loaded[key] = None
        try:
            if impl == "liger":
                from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

                liger = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="mean")
                _loaded[key] = lambda h, w, t: liger(w, h, t)
            else:
                from cut_cross_entropy import linear_cross_entropy as cce

                # filter_eps=None: exact gradients (the default "high" drops small softmax entries)
                _loaded[key] = lambda h, w, t: cce(h, w, t, ignore_index=ignore_index, reduction="mean",
                                                   filter_eps=None)
        except ImportError:
            pass
    return _loaded[key]


def fused_available(impl: str = "liger") -> bool:
    """Whether ``impl`` (liger: Liger-Kernel, cce: Apple's cut-cross-entropy) is installed and CUDA present."""
    if impl not in FUSED:
        raise ValueError(f"impl must be one of {FUSED}, got {impl!r}")
    return torch.cuda.is_available() and _fused_loss(impl, -100) is not None


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
                         impl: str = "liger") -> Tensor:
    """mean over non-ignored t of -log softmax(hidden @ weight.T)[t]: hidden (B, T, C), weight (V, C), targets (B, T).

    ``weight`` holds exactly the vocabulary's rows (slice away padded rows first: they are not tokens).
    ``impl``: ``liger`` or ``cce`` (fused kernels, CUDA only) or ``torch`` (logits, then the float32 loss,
    which is also what a fused ``impl`` falls back to on a CPU tensor).
    """
    if impl not in FUSED + ("torch",):
        raise ValueError(f"impl must be one of {FUSED + ('torch',)}, got {impl!r}")
    h, t = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    if impl != "torch" and hidden.is_cuda:
        loss_fn = _fused_loss(impl, ignore_index)
        if loss_fn is None:
            raise ImportError(f"linear_cross_entropy(impl={impl!r}) needs {PACKAGES[impl]} (the gpu extra)")
        if torch.is_autocast_enabled(h.device.type):
            # the kernels take their operands as given: under autocast, hand them what F.linear would use
            dt = torch.get_autocast_dtype(h.device.type)
            h, weight = h.to(dt), weight.to(dt)
        return _eager(loss_fn, h, weight, t)
    return F.cross_entropy(_at_least_float32(F.linear(h, weight)), t, ignore_index=ignore_index)


def _at_least_float32(logits: Tensor) -> Tensor:
    """bf16/fp16 logits up to float32 for the log-sum-exp; float64 stays float64 (``.float()`` would round it)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@outside_graphs  # neither launcher traces (Liger: FakeTensor addmm, .item(); CCE: a numel test): eager
def _eager(loss_fn, h: Tensor, weight: Tensor, t: Tensor) -> Tensor:
    return loss_fn(h, weight, t)
