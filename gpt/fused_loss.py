"""Language-model head + cross-entropy in one step, never holding the (B*T, vocab) logits.

For GPT-2 at batch 16 x 1024 the logits are 16384 x 50304: 1.6 GiB in bfloat16 and twice that for their
float32 cross-entropy, about a tenth of a training step on an H100. Liger-Kernel's
``LigerFusedLinearCrossEntropyLoss`` computes the head and the loss chunk by chunk in Triton, with the
gradients of the hidden states and the head weight in the same pass. It is used on CUDA when the
``gpu`` extra's ``liger-kernel`` is installed; elsewhere the plain head + float32 cross-entropy runs, the
reference the GPU property compares the fused loss with.
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


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -100,
                         fused: bool = True) -> Tensor:
    """mean over non-ignored t of -log softmax(hidden @ weight.T)[t]: hidden (B, T, C), weight (V, C), targets (B, T).

    ``weight`` holds exactly the vocabulary's rows (slice away padded rows first: they are not tokens).
    """
    h, t = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    loss_fn = _liger_loss(ignore_index) if fused and hidden.is_cuda else None
    if loss_fn is not None:
        return _eager(loss_fn, weight, h, t)
    return F.cross_entropy(F.linear(h, weight).float(), t, ignore_index=ignore_index)


@torch.compiler.disable  # Liger's Triton launcher does not trace (FakeTensor addmm, .item()); run it eagerly
def _eager(loss_fn, weight: Tensor, h: Tensor, t: Tensor) -> Tensor:
    return loss_fn(weight, h, t)
