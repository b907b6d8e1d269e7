"""One training step: micro-batches with gradient accumulation, optional activation checkpointing and compile.

The loss of a step is the mean over all non-ignored tokens of the global batch (``gpt.loss``): every
micro-batch's backward uses ``sum / N`` with N counted once over the whole step's targets (and, under data
parallelism, all-reduced over the ranks by the caller through ``global_tokens``), so the accumulated gradient
is the gradient of one full-batch step whatever the split and however many targets each piece ignores.

    step = TrainStep(model, micro_batches=4, checkpoint=True)
    loss = step(idx, targets)          # fills .grad; the caller clips and steps the optimizer
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .loss import count_tokens, cross_entropy


def split_rows(t: Tensor, micro_batches: int) -> list[Tensor]:
    """``micro_batches`` contiguous row chunks of ``t`` (B, ...); sizes differ by at most one row."""
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ValueError(f"micro_batches must be an int >= 1, got {micro_batches!r}")
    if micro_batches > t.size(0):
        raise ValueError(f"micro_batches={micro_batches} exceeds the batch size {t.size(0)}")
    return list(torch.tensor_split(t, micro_batches, dim=0))


class _Checkpointed(nn.Module):
    """Recomputes a block in the backward pass instead of storing its activations.

    Non-reentrant (use_reentrant=False: keyword arguments and parameters' gradients work as in the plain
    block) and preserve_rng_state=True: the recomputation replays the forward's dropout masks, so the
    gradients are those of the plain run (a different mask would give the gradient of another sample).
    """

    def __init__(self, block: nn.Module, preserve_rng_state: bool = True) -> None:
        super().__init__()
        self.block, self.preserve_rng_state = block, preserve_rng_state

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, preserve_rng_state=self.preserve_rng_state,
                          **kwargs)


def enable_checkpointing(model: nn.Module, preserve_rng_state: bool = True) -> nn.Module:
    """Wrap every block of ``model.blocks`` (in place) for activation checkpointing; returns ``model``.

    Parameter names gain a ``.block`` component; undo with :func:`disable_checkpointing`.
    ``preserve_rng_state=False`` exists for the properties' power check only: it recomputes with fresh
    dropout masks, a wrong gradient whenever dropout > 0.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"activation checkpointing needs a model with a `blocks` ModuleList, got "
                        f"{type(model).__name__}")
    for i, block in enumerate(blocks):
        if not isinstance(block, _Checkpointed):
            blocks[i] = _Checkpointed(block, preserve_rng_state)
    return model


def disable_checkpointing(model: nn.Module) -> nn.Module:
    for i, block in enumerate(model.blocks):
        if isinstance(block, _Checkpointed):
            model.blocks[i] = block.block
    return model


class TrainStep:
    """Forward and backward of one optimizer step over ``micro_batches`` pieces of the batch.

    ``forward`` maps idx (b, T) to logits (b, T, V) (default: the model itself; pass a compiled module or a
    subject's logits function). ``compile=True`` compiles that forward with torch.compile (``compile_kw``).
    ``global_tokens`` (optional) maps this process's non-ignored token count to the global one: data
    parallel callers pass an all-reduce sum, so every rank divides by the count of the whole global batch.
    ``dp_ranks``: DDP and FSDP *average* the ranks' gradients, so a rank's sum / N_global would end up divided
    by the world size twice; each piece's loss is multiplied by ``dp_ranks`` (the data-parallel world size)
    before backward to undo that average. The returned loss is this rank's share of the global mean.
    ``scaler``: a torch.amp.GradScaler (float16), which scales each piece's loss before its backward.
    """

    def __init__(self, model: nn.Module, micro_batches: int = 1, checkpoint: bool = False,
                 compile: bool = False, compile_kw: Optional[dict] = None, ignore_index: int = -100,
                 forward: Optional[Callable[[Tensor], Tensor]] = None,
                 global_tokens: Optional[Callable[[int], int]] = None, dp_ranks: int = 1,
                 scaler=None) -> None:
        if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"micro_batches must be an int >= 1, got {micro_batches!r}")
        self.model, self.micro_batches, self.ignore_index = model, micro_batches, ignore_index
        if checkpoint:
            enable_checkpointing(model)
        fwd = forward if forward is not None else model
        self.forward = torch.compile(fwd, **(compile_kw or {})) if compile else fwd
        self.global_tokens = global_tokens
        if isinstance(dp_ranks, bool) or not isinstance(dp_ranks, int) or dp_ranks < 1:
            raise ValueError(f"dp_ranks must be an int >= 1 (the data-parallel world size), got {dp_ranks!r}")
        self.dp_ranks = dp_ranks
        self.scaler = scaler  # a torch.amp.GradScaler for float16: scales each piece's loss before backward

    def __call__(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Accumulate the gradient of the global-batch token-mean loss into ``.grad``; returns that loss
        (detached). Gradients already in ``.grad`` are added to, as with any backward."""
        if idx.shape != targets.shape:
            raise ValueError(f"idx and targets must have the same shape, got {tuple(idx.shape)} and "
                             f"{tuple(targets.shape)}")
        n = count_tokens(targets, self.ignore_index)
        if self.global_tokens is not None:
            n = self.global_tokens(n)
        if n < 1:
            raise ValueError(f"the batch has no target other than ignore_index={self.ignore_index}")
        total = torch.zeros((), dtype=torch.float64)
        for x, y in zip(split_rows(idx, self.micro_batches), split_rows(targets, self.micro_batches)):
            logits = self.forward(x)  # (b, T, V)
            loss = cross_entropy(logits, y, self.ignore_index, reduction="token_mean", num_tokens=n)
            total += loss.detach().double().cpu()
            loss = loss * self.dp_ranks
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return total
