"""Which keys each query may attend, described by positions rather than by a materialised matrix.

A query at position qpos may attend a key at position kpos iff the key is valid (not padding), both lie in
the same segment, kpos <= qpos (causal) and, for a sliding window of W keys, kpos > qpos - W (transformers'
Mistral convention: query i sees keys i - W < j <= i, W keys including itself). The math and sdpa backends
read the dense boolean matrix; flex builds its ``mask_mod`` from the same rule; flash gets the window size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class MaskSpec:
    qpos: Tensor  # (B or 1, T) positions of the queries
    kpos: Tensor  # (B or 1, S) positions of the keys
    window: Optional[int] = None  # sliding window W, None for global attention
    kvalid: Optional[Tensor] = None  # (B or 1, S) False for padding keys
    plain_causal: bool = False  # keys are exactly the queries at positions 0..T-1: kernels' own causal flag

    @classmethod
    def causal(cls, T: int, device=None, window: Optional[int] = None) -> "MaskSpec":
        pos = torch.arange(T, device=device)[None]  # (1, T)
        return cls(pos, pos, window, plain_causal=True)

    def is_plain_causal(self) -> bool:
        """Plain causal attention within the chunk: kernels' own causal flag expresses it, no matrix needed."""
        return self.plain_causal and self.window is None and self.kvalid is None

    def is_bottom_right_causal(self) -> bool:
        """The keys are consecutive positions ending at the last query's and the queries are consecutive, with
        no padding: what flash-attn's causal flag (aligned bottom-right) plus its window_size express."""
        if self.plain_causal and self.kvalid is None:
            return True
        if self.kvalid is not None or self.qpos.size(0) != 1 or self.kpos.size(0) != 1:
            return False
        q, k = self.qpos[0], self.kpos[0]
        return bool((q.diff() == 1).all() and (k.diff() == 1).all() and k[-1] == q[-1])

    def dense(self) -> Tensor:
        """(B or 1, 1, T, S) bool of allowed (query, key) pairs, broadcast over heads."""
        q, k = self.qpos[:, :, None], self.kpos[:, None, :]  # (B, T, 1), (B, 1, S)
        allowed = k <= q
        if self.window is not None:
            allowed = allowed & (k > q - self.window)
        if self.kvalid is not None:
            allowed = allowed & self.kvalid[:, None, :]
        return allowed[:, None]

    def mask_mod(self):
        """The same rule as ``dense`` as a flex_attention mask_mod(b, h, q_idx, kv_idx)."""
        qpos, kpos, kvalid = self.qpos, self.kpos, self.kvalid
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
            return allowed

        return mask_mod
