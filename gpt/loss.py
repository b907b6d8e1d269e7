"""Next-token cross-entropy with a stated normalisation across micro-batches and ranks.

The training loss is the mean over all non-ignored tokens of the *global* batch (every micro-batch on every
rank of one optimizer step):

    L = (1 / N) sum_{t : y_t != ignore_index} -log softmax(z_t)[y_t],   N = #{t : y_t != ignore_index}.

A caller that splits the batch gets L without bias by summing, not averaging: each micro-batch contributes
``cross_entropy(..., reduction="sum") / N`` with N the token count of the whole global batch (all
micro-batches, all ranks: :func:`count_tokens` then an all-reduce), or equivalently
``cross_entropy(..., reduction="token_mean", num_tokens=N)``. Averaging per micro-batch ("mean" on each
piece, then averaging the pieces) weights a token by 1/(k n_i) instead of 1/N, which is the 2024 gradient
accumulation bug (huggingface/trl#2175, fixed in transformers#34191) whenever the n_i differ.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

REDUCTIONS = ("sum", "mean", "token_mean")


def count_tokens(targets: Tensor, ignore_index: int = -100) -> int:
    """Number of targets that count towards the loss (those not equal to ``ignore_index``)."""
    return int((targets != ignore_index).sum())


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100, reduction: str = "sum",
                  num_tokens: Optional[int] = None) -> Tensor:
    """Cross-entropy of ``logits`` (..., V) against ``targets`` (...), skipping ``ignore_index`` targets.

    reduction:
      * "sum": sum over non-ignored tokens (the building block of every split batch);
      * "mean": that sum divided by this call's own non-ignored count (a whole batch in one call only);
      * "token_mean": that sum divided by ``num_tokens``, the non-ignored count of the global batch that this
        piece belongs to (required), so the pieces' losses and gradients add up to the global mean.
    With no non-ignored token, "sum" is 0 and "mean" is NaN (0/0, as torch), never a silent 0.
    """
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("logits and targets must be torch.Tensors")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.dim() < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits must have shape (*targets.shape, vocab_size); got logits "
                         f"{tuple(logits.shape)} and targets {tuple(targets.shape)}")
    if targets.dtype != torch.long:
        raise TypeError(f"targets must be torch.long token ids, got {targets.dtype}")
    if reduction == "token_mean":
        if num_tokens is None or isinstance(num_tokens, bool) or int(num_tokens) != num_tokens or num_tokens < 1:
            raise ValueError(f"reduction='token_mean' needs num_tokens, the global batch's non-ignored token "
                             f"count (an int >= 1), got {num_tokens!r}")
    elif num_tokens is not None:
        raise ValueError(f"num_tokens is only used with reduction='token_mean', got reduction={reduction!r}")
    V = logits.size(-1)
    valid = targets != ignore_index
    if bool(((targets[valid] < 0) | (targets[valid] >= V)).any()):
        raise ValueError(f"targets must be in [0, vocab_size={V}) or equal ignore_index={ignore_index}")
    # float32 at least: a bfloat16 log-softmax over a large vocabulary loses the small probabilities
    z = logits.reshape(-1, V)
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    total = F.cross_entropy(z, targets.reshape(-1), ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / valid.sum()
    return total / num_tokens
