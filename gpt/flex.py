"""The ``flex`` attention backend: torch.nn.attention.flex_attention with the mask as a mask_mod.

Causal, sliding-window and padding masks come from ``MaskSpec.mask_mod`` (positions, never a dense matrix
on the GPU path); attention-logit soft-capping is a score_mod. Sinks are not a score change: a sink adds
e^s to the softmax denominator, so with Z = sum_j e^{s_j} = e^{lse} the sink output is
out * Z / (Z + e^s) = out * sigmoid(lse - s), computed from the log-sum-exp flex returns (a row with no
allowed key has lse = -inf and output 0, as the math path gives with a sink).

What runs where in torch 2.13: on CPU flex_attention runs forward only (it refuses tensors that require
grad), eagerly in float64/float32 and compiled in float32/bfloat16/float16 only and without the log-sum-exp,
so compiled CPU flex cannot take sinks; on CUDA it is compiled (we call the torch.compile'd function, or
flex_attention itself when the caller is already compiling).
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch
from torch import Tensor

from .mask_spec import MaskSpec


def flex_attend(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, scale: float, dropout_p: float = 0.0,
                softcap: Optional[float] = None, sinks: Optional[Tensor] = None) -> Tensor:
    """q (B, nh, T, hs), k and v (B, nqg, S, hs) -> (B, nh, T, hs)."""
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask

    if dropout_p > 0:
        raise ValueError("attn_backend='flex' has no attention dropout: set attn_dropout=0 or use 'math'/'sdpa'")
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, sinks))
    if q.device.type == "cpu" and needs_grad:
        raise ValueError("attn_backend='flex' has no backward on CPU in torch 2.13: run it under torch.no_grad() "
                         "on CPU, or train on CUDA, or use attn_backend='math'/'sdpa'")
    B, nh, T, _ = q.shape
    block_mask = create_block_mask(spec.mask_mod(), B, None, T, k.size(-2), device=q.device)
    score_mod = None
    if softcap is not None:
        cap = torch.tensor(float(softcap), dtype=q.dtype, device=q.device)  # a tensor: no retrace per value

        def score_mod(score, b, h, q_idx, kv_idx):  # flex passes the already scaled score
            return cap * torch.tanh(score / cap)
    aux = dict(return_aux=AuxRequest(lse=True)) if sinks is not None else {}  # compiled CPU flex has no lse
    with warnings.catch_warnings():  # eager CPU use is deliberate (float64 reference runs): no "use compile"
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = _flex_function(q.device.type)(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                                            enable_gqa=k.size(1) != nh, **aux)
    if sinks is None:
        return out
    out, lse = out[0], out[1].lse.to(out[0].dtype)  # (B, nh, T, hs), (B, nh, T)
    return out * torch.sigmoid(lse - sinks.to(out.dtype)[None, :, None])[..., None]


def _flex_function(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cpu" or torch.compiler.is_compiling():
        return flex_attention  # eager CPU supports float64; inside a compiled model dynamo fuses it anyway
    return _compiled_flex()


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)
