"""Per-layer key/value cache for incremental decoding."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Holds keys and values of shape (B, n_query_groups, max_seq_length, hs).

    Only the ``n_query_groups`` kv heads are stored, never copies expanded to ``n_head``.
    """

    def __init__(self, batch_size: int, n_query_groups: int, max_seq_length: int, head_size: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        shape = (batch_size, n_query_groups, max_seq_length, head_size)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @property
    def max_seq_length(self) -> int:
        return self.k.size(2)

    def forward(self, input_pos: Tensor, k: Tensor, v: Tensor, end: int) -> tuple[Tensor, Tensor]:
        """Write k, v (B, nqg, T, hs) at ``input_pos`` (T,); return the cache up to position ``end``."""
        if k.size(0) != self.k.size(0):
            raise ValueError(f"batch size {k.size(0)} does not match the KV cache's {self.k.size(0)}")
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
