"""FlashAttention-4 as a ``torch.library`` custom op with its backward, so ``torch.compile`` traces through it.

FA4 (``flash_attn.cute``) launches CuTe-DSL kernels from Python, which Dynamo cannot trace: called
directly, every attention layer is a graph break, and a compiled training step with ``attn_backend="flash"``
ran slower than with SDPA. As an opaque custom op with a fake (shape-only) implementation and a registered
autograd formula, the op is one node in the graph, forward and backward. FA2 (the ``flash_attn`` package)
registers its own ops and needs none of this.

Layout as FA4 takes it: q (B, T, nh, hs), k and v (B, S, nqg, hs); out (B, T, nh, hs) and the
log-sum-exp (B, nh, T) in float32, which the backward needs. Packed (varlen, gpt/varlen.py): with
``cu_seqlens`` (R + 1,) int32 the tokens of R sequences lie back to back, q (N, nh, hs), k and v (N, nqg, hs),
out (N, nh, hs) and the log-sum-exp (nh, N); the same cu_seqlens serve queries and keys (self-attention
within each sequence), and ``max_seqlen`` (a host int, 0 when not packed) is the longest sequence.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _window(left: int, right: int) -> tuple[Optional[int], Optional[int]]:
    return (None if left < 0 else left, None if right < 0 else right)


@torch.library.custom_op("gpt::fa4_forward", mutates_args=(), device_types="cuda")
def fa4_forward(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, softcap: float,
                window_left: int, window_right: int, cu_seqlens: Optional[Tensor],
                max_seqlen: int) -> tuple[Tensor, Tensor]:
    from flash_attn.cute.interface import _flash_attn_fwd

    left, right = _window(window_left, window_right)
    out, lse, *_ = _flash_attn_fwd(q, k, v, softmax_scale=scale, causal=causal, softcap=softcap or None,
                                   window_size_left=left, window_size_right=right, return_lse=True,
                                   **_varlen(cu_seqlens, max_seqlen))
    return out, lse


@fa4_forward.register_fake
def _(q, k, v, scale, causal, softcap, window_left, window_right, cu_seqlens, max_seqlen):
    if cu_seqlens is not None:  # packed: out (N, nh, hs), lse (nh, N)
        N, nh, _ = q.shape
        return q.new_empty(N, nh, v.size(-1)), q.new_empty(nh, N, dtype=torch.float32)
    B, T, nh, _ = q.shape
    return q.new_empty(B, T, nh, v.size(-1)), q.new_empty(B, nh, T, dtype=torch.float32)


@torch.library.custom_op("gpt::fa4_backward", mutates_args=(), device_types="cuda")
def fa4_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float,
                 causal: bool, softcap: float, window_left: int, window_right: int, cu_seqlens: Optional[Tensor],
                 max_seqlen: int) -> tuple[Tensor, Tensor, Tensor]:
    from flash_attn.cute.interface import _flash_attn_bwd

    left, right = _window(window_left, window_right)
    dq, dk, dv = _flash_attn_bwd(q, k, v, out, dout.contiguous(), lse, scale, causal, softcap,
                                 window_size_left=left, window_size_right=right,
                                 **_varlen(cu_seqlens, max_seqlen))[:3]
    return dq, dk, dv


@fa4_backward.register_fake
def _(dout, q, k, v, out, lse, scale, causal, softcap, window_left, window_right, cu_seqlens, max_seqlen):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _varlen(cu_seqlens: Optional[Tensor], max_seqlen: int) -> dict:
    """FA4's keyword arguments for packed sequences (none when not packed)."""
    if cu_seqlens is None:
        return {}
    return dict(cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen)


def _setup_context(ctx, inputs, output):
    q, k, v, scale, causal, softcap, window_left, window_right, cu_seqlens, max_seqlen = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.args = (scale, causal, softcap, window_left, window_right)
    ctx.max_seqlen = max_seqlen


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = fa4_backward(dout, q, k, v, out, lse, *ctx.args, cu_seqlens, ctx.max_seqlen)
    return dq, dk, dv, None, None, None, None, None, None, None


fa4_forward.register_autograd(_backward, setup_context=_setup_context)


def fa4_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool = True, softcap: float = 0.0,
                  window: tuple[int, int] = (-1, -1), cu_seqlens: Optional[Tensor] = None,
                  max_seqlen: int = 0) -> Tensor:
    """(B, T, nh, hs) attention output through the custom op, or (N, nh, hs) for packed sequences
    (``cu_seqlens``); window (-1, -1) is unbounded."""
    return fa4_forward(q.contiguous(), k.contiguous(), v.contiguous(), scale, causal, softcap, *window,
                       cu_seqlens, max_seqlen)[0]
