"""Causal self-attention with grouped kv heads and four interchangeable kernels.

``math`` is the reference, softmax(Q K^T / sqrt(hs) + mask) V written out; ``sdpa`` is
torch.nn.functional.scaled_dot_product_attention; ``flash`` is the flash-attn package (FA2 or FA4); ``flex``
is torch.nn.attention.flex_attention (gpt/flex.py). Masks are described by positions (gpt/masks.py,
gpt/mask_spec.py); sliding windows, soft-capping and sinks are per-layer options of the config.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embedding import apply_rope
from .flex import flex_attend
from .kv_cache import KVCache
from .mask_spec import MaskSpec
from .masks import Layout, guard_empty_rows
from .norm import build_qk_norms, qk_normed
from .ring_cache import RingKVCache
from .varlen import packed_attend


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer: int = 0) -> None:
        super().__init__()
        self.config = config
        self.window = config.window(layer)  # sliding window W of this layer, None for global attention
        self.qkv = nn.Linear(config.n_embd, config.qkv_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.n_head * config.head_size, config.n_embd, bias=config.bias)
        # GPT-OSS: one learned logit per query head, an extra term e^s in the softmax denominator
        self.sinks = nn.Parameter(torch.zeros(config.n_head)) if config.attention_sinks else None
        self.q_norm, self.k_norm = build_qk_norms(config)
        self.kv_cache: Optional[Union[KVCache, RingKVCache]] = None
        if config.attn_backend == "flash" and torch.cuda.is_available():
            try:  # import now, eagerly: an import traced by torch.compile breaks the graph
                flash_attn_func()
            except ImportError:
                pass  # the forward raises the error with the install hint

    def forward(self, x: Tensor, rope: Optional[tuple[Tensor, Tensor]] = None,
                layout: Optional[Layout] = None) -> Tensor:
        c = self.config
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split((c.n_head * c.head_size, c.n_query_groups * c.head_size,
                                     c.n_query_groups * c.head_size), dim=-1)
        q = q.view(B, T, c.n_head, c.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, c.n_query_groups, c.head_size).transpose(1, 2)  # (B, nqg, T, hs)
        v = v.view(B, T, c.n_query_groups, c.head_size).transpose(1, 2)  # (B, nqg, T, hs)
        if c.qk_norm != "none":  # before RoPE, so the norm sees the projection itself
            q, k = qk_normed(self.q_norm, q, c.qk_norm), qk_normed(self.k_norm, k, c.qk_norm)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)

        mask = MaskSpec.causal(T, x.device, self.window)  # plain causal (windowed) over this chunk
        if layout is not None and layout.slots is not None and self.kv_cache is not None:
            # the cache hands back its keys with their stored positions and validity (B, S)
            k, v, kpos, kvalid = self.kv_cache(layout.slots, k, v, layout.end, layout.pos, layout.valid)
            mask = MaskSpec(layout.pos, kpos, self.window, kvalid)  # (B, T) queries, (B, S) keys
        elif layout is not None and not layout.plain_causal:
            mask = MaskSpec(layout.pos, layout.pos, self.window, layout.valid, layout.segment, layout.segment,
                            varlen=layout.varlen)  # varlen: packed once per forward for flash (gpt/varlen.py)

        dropout_p = c.attn_dropout if self.training else 0.0
        y = attend(q, k, v, mask, dropout_p, c.attn_backend, softcap=c.attn_logit_softcap,
                   sinks=self.sinks)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, c.n_head * c.head_size)
        return self.proj(y)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Union[MaskSpec, Tensor, None], dropout_p: float, backend: str,
           softcap: Optional[float] = None, sinks: Optional[Tensor] = None) -> Tensor:
    """q (B, nh, T, hs), k and v (B, nqg, S, hs) -> (B, nh, T, hs).

    ``mask``: a MaskSpec (positions), a bool tensor (B, T, S) or (T, S) of allowed pairs, or None for causal.
    A query with no allowed key gets output 0 (see gpt.masks). ``softcap`` c: the scores s = q k^T / sqrt(hs)
    become c * tanh(s / c) before the mask (Gemma 2). ``sinks`` (nh,): head h's softmax denominator gains
    e^{sinks[h]} (GPT-OSS). scaled_dot_product_attention can express neither, so with either of them the
    sdpa backend computes through the math path (same result, math's memory).
    """
    scale = 1.0 / math.sqrt(q.size(-1))
    spec = mask if isinstance(mask, MaskSpec) else None
    if backend == "flash":  # the model refuses masks flash cannot express (gpt.model._check_flash)
        if spec is not None and spec.qseg is not None:  # packed rows: one varlen sequence per segment run
            kernel = functools.partial(flash_varlen_attention, dropout_p=dropout_p, scale=scale, softcap=softcap,
                                       sinks=sinks)
            return packed_attend(q, k, v, spec, kernel)
        if mask is not None and (spec is None or not spec.is_bottom_right_causal()):
            raise ValueError("attn_backend='flash' handles causal (optionally windowed) attention over a "
                             "contiguous chunk without padding, or packed rows (segment_ids) without padding; "
                             "use 'flex', 'sdpa' or 'math'")
        return flash_attention(q, k, v, dropout_p, scale, window=spec.window if spec else None,
                               softcap=softcap, sinks=sinks)
    if backend == "flex":  # rows with no allowed key: flex gives 0 (and lse = -inf, so the sink factor 0)
        return flex_attend(q, k, v, spec or MaskSpec.of_tensor_call(mask, q, k), scale, dropout_p, softcap, sinks)
    if spec is not None:
        mask = None if spec.is_plain_causal() else spec.dense()  # (B, T, S)
    if mask is None:
        return attend_masked(q, k, v, None, dropout_p, backend, scale, softcap, sinks)
    mask, seen = guard_empty_rows(mask if mask.dim() == 2 else mask[:, None])  # (B, 1, T, S): all heads
    return attend_masked(q, k, v, mask, dropout_p, backend, scale, softcap, sinks).masked_fill(~seen, 0.0)


def attend_masked(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float, backend: str,
                  scale: float, softcap: Optional[float] = None, sinks: Optional[Tensor] = None) -> Tensor:
    """math or sdpa attention; ``mask`` must leave every query at least one key (or be None: causal)."""
    if backend == "sdpa" and softcap is None and sinks is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None,
                                              scale=scale, enable_gqa=k.size(1) != q.size(1))
    att = attention_probs(q, k, mask, scale, softcap, sinks)
    return F.dropout(att, dropout_p, training=dropout_p > 0) @ expand_kv(v, q.size(1))


def expand_kv(kv: Tensor, n_head: int) -> Tensor:
    """(B, nqg, S, hs) -> (B, nh, S, hs): query head h reads kv group h // (nh / nqg)."""
    return kv.repeat_interleave(n_head // kv.size(1), dim=1)


def causal_mask(T: int, S: int, device=None) -> Tensor:
    """(T, S) bool, the last T of S positions as queries: query i sees keys j <= i + S - T."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def attention_probs(q: Tensor, k: Tensor, mask: Optional[Tensor], scale: float,
                    softcap: Optional[float] = None, sinks: Optional[Tensor] = None) -> Tensor:
    """softmax(cap(Q K^T * scale) + mask) over the keys (and the sinks): (B, nh, T, S)."""
    att = (q @ expand_kv(k, q.size(1)).transpose(-2, -1)) * scale  # (B, nh, T, S)
    if softcap is not None:  # before the mask: tanh(-inf) would turn masked scores into -c
        att = softcap * torch.tanh(att / softcap)
    if mask is None:
        mask = causal_mask(q.size(-2), k.size(-2), q.device)
    att = att.masked_fill(~mask, float("-inf"))
    if sinks is None:
        return F.softmax(att, dim=-1)
    B, nh, T, _ = att.shape
    sink = sinks.to(att.dtype).view(1, nh, 1, 1).expand(B, nh, T, 1)  # (B, nh, T, 1) one logit per head
    return F.softmax(torch.cat([att, sink], dim=-1), dim=-1)[..., :-1]  # the sink's share carries no value


# FlashAttention-4 4.0.0b36 on SM90 (H100) returns wrong gradients once T > 64 (dq up to 180x the bf16
# reference's error) for head sizes 8, 16, 40, 48, 72, 80, 104 and 112, found by
# properties/test_gpu_attention_kernels.py; 24, 32, 56, 64, 88, 96, 120 and 128 were right. We refuse to
# train through the failing class (head_size % 32 in {8, 16}) rather than return silently wrong gradients.
def fa4_backward_is_trusted(head_size: int) -> bool:
    return head_size % 32 in (0, 24)


def flash_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float, scale: float,
                    check_head_size: bool = True, window: Optional[int] = None, softcap: Optional[float] = None,
                    sinks: Optional[Tensor] = None) -> Tensor:
    # causal=True aligns the mask bottom-right, which is exactly a contiguous chunk after the cache; a window
    # of W keys is window_size=(W - 1, 0): W - 1 keys to the left of the diagonal, none to the right
    fn, has_dropout = _flash_checked(q, k, v, dropout_p, check_head_size, sinks)
    args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, T, H, hs)
    kw = dict(softmax_scale=scale, causal=True)
    if softcap is not None:
        kw["softcap"] = float(softcap)  # FA2 and FA4 both take softcap (0.0 = off)
    if has_dropout:  # FA2: window_size=(-1, -1) is global
        if window is not None:
            kw["window_size"] = (window - 1, 0)
        out = fn(*args, dropout_p=dropout_p, **kw)
    else:  # FA4 through the custom op (gpt/flash_op.py): window (W - 1, 0), softcap 0.0 = off
        from .flash_op import fa4_attention  # a custom op: torch.compile traces it without a graph break

        out = fa4_attention(*args, scale, causal=True, softcap=float(softcap or 0.0),
                            window=(-1, -1) if window is None else (window - 1, 0))
    if isinstance(out, tuple):  # FA4 may return (out, lse)
        out = out[0]
    return out.transpose(1, 2)


def flash_varlen_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int,
                           window: tuple[int, int], dropout_p: float, scale: float, softcap: Optional[float] = None,
                           sinks: Optional[Tensor] = None) -> Tensor:
    """Packed tokens q (N, nh, hs), k and v (N, nqg, hs) -> (N, nh, hs), causal within each sequence of
    ``cu_seqlens`` (R + 1,) int32, ``window`` = flash-attn's window_size: the kernel gpt.varlen.packed_attend
    calls for attn_backend='flash' (FA2's flash_attn_varlen_func, else FA4 through gpt/flash_op.py)."""
    _, has_dropout = _flash_checked(q, k, v, dropout_p, True, sinks)
    if has_dropout:  # FA2 takes the same cu_seqlens for queries and keys: self-attention within each run
        return _flash[2](q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p=dropout_p,
                         softmax_scale=scale, causal=True, window_size=window, softcap=float(softcap or 0.0))
    from .flash_op import fa4_attention  # a custom op: torch.compile traces it without a graph break

    return fa4_attention(q, k, v, scale, causal=True, softcap=float(softcap or 0.0), window=window,
                         cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)


def _flash_checked(q: Tensor, k: Tensor, v: Tensor, dropout_p: float, check_head_size: bool,
                   sinks: Optional[Tensor]) -> tuple:
    """flash_attn_func(), after refusing what neither FA2 nor FA4 computes right (padded or packed alike)."""
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"attn_backend='flash' needs CUDA float16/bfloat16 tensors, got {q.dtype} on {q.device.type}; "
            "use attn_backend='sdpa' or 'math' elsewhere"
        )
    fn, has_dropout = flash_attn_func()
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if check_head_size and not has_dropout and needs_grad and not fa4_backward_is_trusted(q.size(-1)):
        raise ValueError(f"head_size {q.size(-1)}: FlashAttention-4's backward is wrong for head sizes with "
                         "head_size % 32 in {8, 16} (see gpt.attention.fa4_backward_is_trusted); "
                         "use attn_backend='sdpa' to train this model")
    if sinks is not None:  # FA2 has none; FA4's learnable_sink is not wired through our custom op's backward
        raise ValueError("attn_backend='flash' does not support attention sinks: use attn_backend='flex' or 'math'")
    if not has_dropout and dropout_p > 0:
        raise ValueError("FlashAttention-4 has no attention dropout: set attn_dropout=0 or use another backend")
    return fn, has_dropout


# a module global, not functools.cache: Dynamo reads it without a graph break. (function, supports dropout,
# varlen function): FA2's flash_attn_func and flash_attn_varlen_func, or FA4's flash_attn.cute function and None
_flash: Optional[tuple] = None


def flash_attn_func():
    """(function, supports dropout): FA2's flash_attn_func, else FA4's flash_attn.cute one."""
    global _flash
    if _flash is None:
        _flash = _import_flash()
    return _flash[:2]


def _import_flash():
    try:
        from flash_attn import flash_attn_func as fa2, flash_attn_varlen_func as fa2_varlen
        return fa2, True, fa2_varlen
    except ImportError:
        pass
    try:
        from flash_attn.cute import flash_attn_func as fa4
        return fa4, False, None  # FA4's varlen path is gpt/flash_op.py's custom op
    except ImportError as e:
        raise ImportError("attn_backend='flash' needs the flash-attn package: pip install flash-attn") from e


def flash_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        flash_attn_func()
        return True
    except ImportError:
        return False
