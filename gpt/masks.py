"""Attention masks built from positions, and the per-token inputs that define them.

Every attention call knows, per row b, the query positions qpos (B, T), the key positions kpos (B, S), which
keys are real tokens kvalid (B, S) (False at padding) and, for packed rows, segment ids. Query i may attend
key j iff

    kvalid[b, j]  and  seg_q[b, i] == seg_k[b, j]  and  kpos[b, j] <= qpos[b, i]

(a sliding window of W keys adds kpos[b, j] > qpos[b, i] - W). The KV cache stores the positions and
validity of its slots, so left-padded rows and cached decoding need no special mask code. Because positions
increase strictly within a segment (checked here), "kpos <= qpos" is the usual causal mask in index order.

A query with no visible key (a padded query whose row has no real key before it, an all-padding row) has
attention output exactly 0 in every backend and dtype: ``guard_empty_rows`` lets such a row see every key,
so no softmax runs over only -inf (the NaN of pytorch/pytorch#110213), and the caller zeroes its output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class Layout:
    """Where the T tokens of one forward call sit; what every attention layer builds its mask from."""

    pos: Tensor  # (B, T) long: the tokens' positions
    valid: Optional[Tensor] = None  # (B, T) bool, False at padding; None: every token is real
    segment: Optional[Tensor] = None  # (B, T) segment ids of packed rows; None: one segment per row
    slots: Optional[Tensor] = None  # (T,) KV-cache slots this chunk writes; None: no cache in use
    end: Optional[int] = None  # with a cache: keys are read from slots [0, end)
    varlen: Optional[object] = None  # gpt.varlen.Packing of the segments (flash backend; model.forward)

    @property
    def plain_causal(self) -> bool:
        """No padding, no segments, no cache: the kernels' own causal mask is exactly the visibility rule."""
        return self.valid is None and self.segment is None and self.slots is None


def visible(qpos: Tensor, kpos: Tensor, kvalid: Optional[Tensor] = None, qseg: Optional[Tensor] = None,
            kseg: Optional[Tensor] = None) -> Tensor:
    """(B, T, S) bool: query i of row b may attend key j (the rule in the module docstring)."""
    mask = kpos[:, None, :] <= qpos[:, :, None]  # (B, T, S)
    if kvalid is not None:
        mask = mask & kvalid[:, None, :]
    if qseg is not None:
        mask = mask & (kseg[:, None, :] == qseg[:, :, None])
    return mask


def guard_empty_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(mask', seen): rows with no visible key see every key in mask' (finite softmax, finite gradients);
    ``seen`` (..., T, 1) is False for them, and the caller sets their output to 0."""
    seen = mask.any(dim=-1, keepdim=True)
    return mask | ~seen, seen


# ---------------------------------------------------------------------------------------------- inputs
def layout(B: int, T: int, base_pos: Tensor, *, cached: bool, end: Optional[int], block_size: int,
           attention_mask=None, position_ids=None, segment_ids=None, explicit_input_pos: bool = False) -> Layout:
    """Validate the per-token inputs of ``GPT.forward`` and resolve them into a ``Layout``.

    ``base_pos`` (T,) are the positions ``input_pos`` gives (0..T-1 without it); with a KV cache
    (``cached``) they are also the slots written. ``attention_mask`` is (B, T) without a cache and
    (B, end) with one, covering cached and current tokens (Hugging Face's convention). Without
    ``position_ids`` a token's position is the number of real tokens before it in its row (and segment):
    cumsum(attention_mask) - 1.
    """
    device = base_pos.device
    if cached and segment_ids is not None:
        raise ValueError("segment_ids (packed sequences) cannot be combined with a KV cache: decode each "
                         "sequence in its own row")
    if not cached and explicit_input_pos and (attention_mask is not None or position_ids is not None
                                              or segment_ids is not None):
        raise ValueError("input_pos without a KV cache only shifts positions; pass position_ids (B, T) "
                         "instead of input_pos together with attention_mask, position_ids or segment_ids")
    mask_cols = end if cached else T
    mask = _check_mask(attention_mask, B, mask_cols, device, cached)
    seg = _check_segments(segment_ids, B, T, device)
    valid = None
    if mask is not None:
        valid = mask[:, base_pos] if cached else mask  # (B, T)
    if position_ids is not None:
        pos = _check_position_ids(position_ids, B, T, block_size, device)
        _check_increasing(pos, valid, seg)
    elif mask is not None or seg is not None:
        full = mask if mask is not None else torch.ones(B, T, dtype=torch.bool, device=device)
        counts = full.long().cumsum(dim=1)  # (B, cols): real tokens up to and including each column
        if seg is not None:  # restart the count at every segment's first token
            starts = torch.ones_like(seg, dtype=torch.bool)
            starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
            before = torch.where(starts, counts - full.long(), torch.zeros_like(counts))
            counts = counts - before.cummax(dim=1).values  # counts before a start never decrease
        pos = (counts - 1).clamp(min=0)  # padding before the first real token sits at position 0
        pos = pos[:, base_pos] if cached else pos
    else:
        pos = base_pos.expand(B, T)
    if cached:
        return Layout(pos=pos, valid=valid, segment=None, slots=base_pos, end=end)
    return Layout(pos=pos, valid=valid, segment=seg)


def _check_mask(mask, B: int, cols: int, device, cached: bool) -> Optional[Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor of 0/1 (or bool), got {type(mask).__name__}")
    if mask.dtype != torch.bool and mask.dtype not in _INT_DTYPES:
        raise TypeError(f"attention_mask must hold 0/1 integers or bools (1 = real token, 0 = padding), "
                        f"got dtype {mask.dtype}")
    if mask.shape != (B, cols):
        what = "(B, input_pos + T) covering cached and current tokens" if cached else "(B, T)"
        raise ValueError(f"attention_mask must have shape {what} = {(B, cols)}, got {tuple(mask.shape)}")
    mask = mask.to(device)
    if mask.dtype != torch.bool:
        if mask.numel() and not torch.compiler.is_compiling() and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("attention_mask values must be 0 (padding) or 1 (real token), got "
                             f"{sorted(set(mask.unique().tolist()))[:6]}")
        mask = mask != 0
    return mask


def _int_rows(name: str, t, B: int, T: int, device) -> Tensor:
    """``t`` as int64 on ``device``, refused by name unless it is an integer tensor of shape (B, T)."""
    if not isinstance(t, Tensor) or t.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer torch.Tensor (B, T), got {getattr(t, 'dtype', type(t).__name__)}")
    if t.shape != (B, T):
        raise ValueError(f"{name} must have shape (B, T) = {(B, T)}, got {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.long)


def _check_position_ids(pos, B: int, T: int, block_size: int, device) -> Tensor:
    pos = _int_rows("position_ids", pos, B, T, device)
    if not torch.compiler.is_compiling():
        lo, hi = int(pos.min()), int(pos.max())
        if lo < 0 or hi >= block_size:
            raise ValueError(f"position_ids must be in [0, block_size={block_size}), got values in [{lo}, {hi}]")
    return pos


def _check_segments(seg, B: int, T: int, device) -> Optional[Tensor]:
    if seg is None:
        return None
    seg = _int_rows("segment_ids", seg, B, T, device)
    if not torch.compiler.is_compiling():
        for b in range(B):
            runs = torch.unique_consecutive(seg[b])
            if runs.numel() != torch.unique(runs).numel():
                raise ValueError(f"segment_ids must be contiguous runs (each id in one run per row), row {b} "
                                 f"has runs {runs.tolist()[:12]}")
    return seg


def _check_increasing(pos: Tensor, valid: Optional[Tensor], seg: Optional[Tensor]) -> None:
    """Positions of the real tokens must increase strictly within each segment of a row: the mask is
    position-based, so equal or decreasing positions would let a token see later ones."""
    if torch.compiler.is_compiling():
        return
    for b in range(pos.size(0)):
        keep = slice(None) if valid is None else valid[b]
        p = pos[b][keep]
        same = torch.ones_like(p[1:], dtype=torch.bool) if seg is None else seg[b][keep][1:] == seg[b][keep][:-1]
        bad = (p[1:] <= p[:-1]) & same
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"position_ids must increase strictly within each sequence (segment) over the real "
                             f"tokens; row {b} has {int(p[i])} followed by {int(p[i + 1])}")
