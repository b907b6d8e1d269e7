"""Which keys each query may attend, described by positions rather than by a materialised matrix.

The rule is gpt.masks.visible's (valid key, same segment, kpos <= qpos) plus, for a sliding window of W keys,
kpos > qpos - W (transformers' Mistral convention: query i sees keys i - W < j <= i, W keys including itself).
The math and sdpa backends read the dense boolean matrix (``dense``); flex builds its ``mask_mod`` from the same
rule without materialising it; flash expresses the plain (windowed) causal case through its flags, and packed
rows (segment ids) through its varlen kernels where they reproduce the rule exactly (gpt/varlen.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .masks import visible


@dataclass
class MaskSpec:
    qpos: Tensor  # (B or 1, T) positions of the queries
    kpos: Tensor  # (B or 1, S) positions of the keys
    window: Optional[int] = None  # sliding window W, None for global attention
    kvalid: Optional[Tensor] = None  # (B or 1, S) False for padding keys
    qseg: Optional[Tensor] = None  # (B, T) segment ids of packed rows
    kseg: Optional[Tensor] = None  # (B, S)
    plain_causal: bool = False  # keys are exactly the queries at positions 0..T-1: kernels' own causal flag
    allowed: Optional[Tensor] = None  # a caller's dense (B, T, S) or (T, S) mask, used as is
    varlen: Optional[object] = None  # gpt.varlen.Packing of qseg, computed once per forward (flash only)

    @classmethod
    def causal(cls, T: int, device=None, window: Optional[int] = None) -> "MaskSpec":
        pos = torch.arange(T, device=device)[None]  # (1, T)
        return cls(pos, pos, window, plain_causal=True)

    @classmethod
    def of_tensor_call(cls, mask: Optional[Tensor], q: Tensor, k: Tensor) -> "MaskSpec":
        """attend(..., mask=None or a bool tensor): causal over the last T of S positions, or that tensor."""
        T, S = q.size(-2), k.size(-2)
        pos = cls(torch.arange(S - T, S, device=q.device)[None], torch.arange(S, device=q.device)[None])
        if mask is not None:
            pos.allowed = mask if mask.dim() == 3 else mask[None]
        return pos

    def is_plain_causal(self) -> bool:
        """Plain causal attention within the chunk: kernels' own causal flag expresses it, no matrix needed."""
        return self.plain_causal and self.window is None and self.kvalid is None and self.qseg is None

    def is_bottom_right_causal(self) -> bool:
        """Queries consecutive, keys consecutive positions ending at the last query's, no padding or packing,
        the same in every row: what flash-attn's causal flag (aligned bottom-right) and window_size express."""
        if self.allowed is not None or self.kvalid is not None and not bool(self.kvalid.all()):
            return False
        if self.qseg is not None:
            return False
        if self.plain_causal:
            return True
        q, k = self.qpos, self.kpos
        same_rows = bool((q == q[:1]).all() and (k == k[:1]).all())
        return same_rows and bool((q[0].diff() == 1).all() and (k[0].diff() == 1).all() and k[0, -1] == q[0, -1])

    def dense(self) -> Tensor:
        """(B or 1, T, S) bool of allowed (query, key) pairs."""
        if self.allowed is not None:
            return self.allowed
        mask = visible(self.qpos, self.kpos, self.kvalid, self.qseg, self.kseg)  # (B, T, S)
        if self.window is not None:
            mask = mask & (self.kpos[:, None, :] > self.qpos[:, :, None] - self.window)
        return mask

    def mask_mod(self):
        """The same rule as ``dense`` as a flex_attention mask_mod(b, h, q_idx, kv_idx)."""
        if self.allowed is not None:
            allowed = self.allowed
            ab = (lambda b: b) if allowed.size(0) > 1 else (lambda b: 0)
            return lambda b, h, q_idx, kv_idx: allowed[ab(b), q_idx, kv_idx]
        qpos, kpos, kvalid, qseg, kseg = self.qpos, self.kpos, self.kvalid, self.qseg, self.kseg
        window = None if self.window is None else torch.tensor(self.window, device=qpos.device)  # no retrace per W
        qb = (lambda b: b) if qpos.size(0) > 1 else (lambda b: 0)
        kb = (lambda b: b) if kpos.size(0) > 1 else (lambda b: 0)

        def mask_mod(b, h, q_idx, kv_idx):
            q, k = qpos[qb(b), q_idx], kpos[kb(b), kv_idx]
            allowed = k <= q
            if window is not None:
                allowed = allowed & (k > q - window)
            if kvalid is not None:
                allowed = allowed & kvalid[kb(b), kv_idx]
            if qseg is not None:
                allowed = allowed & (qseg[b, q_idx] == kseg[b, kv_idx])
            return allowed

        return mask_mod
