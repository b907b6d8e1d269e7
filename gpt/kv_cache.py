"""Per-layer key/value cache for incremental decoding."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Holds keys and values of shape (B, n_query_groups, max_seq_length, hs), and per row the position
    and validity (False: padding, or never written) of every slot, (B, max_seq_length).

    Only the ``n_query_groups`` kv heads are stored, never copies expanded to ``n_head``. Attention builds
    its mask from the stored positions (``gpt.masks.visible``), so left-padded rows need no special code.
    """

    def __init__(self, batch_size: int, n_query_groups: int, max_seq_length: int, head_size: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        shape = (batch_size, n_query_groups, max_seq_length, head_size)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        # which positions hold a written key/value: reading an unwritten (zero) slot is a silent wrong answer
        self.register_buffer("written", torch.zeros(max_seq_length, dtype=torch.bool, device=device),
                             persistent=False)
        self.register_buffer("pos", torch.zeros(batch_size, max_seq_length, dtype=torch.long, device=device),
                             persistent=False)
        self.register_buffer("valid", torch.zeros(batch_size, max_seq_length, dtype=torch.bool, device=device),
                             persistent=False)

    @property
    def max_seq_length(self) -> int:
        return self.k.size(2)

    def forward(self, input_pos: Tensor, k: Tensor, v: Tensor, end: int, pos: Tensor,
                valid: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Write k, v (B, nqg, T, hs) at slots ``input_pos`` (T,) with their positions ``pos`` (B, T) and
        validity ``valid`` (B, T; None: all real); return keys, values, positions and validity of slots
        [0, end)."""
        if k.size(0) != self.k.size(0):
            raise ValueError(f"batch size {k.size(0)} does not match the KV cache's {self.k.size(0)}")
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        self.pos.index_copy_(1, input_pos, pos)
        self.valid.index_copy_(1, input_pos, torch.ones_like(pos, dtype=torch.bool) if valid is None else valid)
        return self.k[:, :, :end], self.v[:, :, :end], self.pos[:, :end], self.valid[:, :end]

    def check_no_gap(self, input_pos: Tensor, end: int) -> None:
        """Refuse a chunk at ``input_pos`` that would attend over never-written positions below ``end``;
        otherwise mark its positions written."""
        will = self.written[:end].clone()
        will[input_pos] = True
        if not bool(will.all()):
            gap = (~will).nonzero().flatten()
            raise ValueError(f"input_pos {input_pos.tolist()} leaves a gap in the KV cache: positions "
                             f"{gap.tolist()[:8]} were never written; decode from position "
                             f"{int(gap[0])} (input_pos must continue the cached sequence)")
        self.written[input_pos] = True

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.written.zero_()
        self.pos.zero_()
        self.valid.zero_()
