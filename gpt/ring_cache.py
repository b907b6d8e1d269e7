"""Key/value cache for a sliding-window layer, bounded by the window W (a ring buffer of W slots).

A chunk of T tokens at positions p..p+T-1 attends over the cached keys *and* its own T keys, concatenated,
and only afterwards are the chunk's last min(T, W) keys written into the ring (slot = position mod W). So a
prefill longer than W never overwrites keys that its own earlier queries still need (litgpt#2182: writing
first let early tokens of a long prefill read keys of later positions stored in their slots), and every
query sees exactly the keys p' - W < j <= p' that the full forward gives it; the mask comes from positions.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class RingKVCache(nn.Module):
    """Holds keys and values (B, n_query_groups, W, hs) of the last W positions, and the position of each
    slot (-1 while empty). ``max_seq_length`` is the longest sequence it decodes, not its size."""

    def __init__(self, batch_size: int, n_query_groups: int, window: int, max_seq_length: int, head_size: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        size = min(window, max_seq_length)
        shape = (batch_size, n_query_groups, size, head_size)
        self.window, self._max_seq_length = window, max_seq_length
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("pos", torch.full((size,), -1, dtype=torch.long, device=device), persistent=False)

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def size(self) -> int:
        return self.k.size(2)

    def forward(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keys and values (B, nqg, S, hs) this chunk attends, cached then new, and their positions (S,).

        ``input_pos`` (T,) must be consecutive; decoding may restart anywhere the ring still holds the
        W - 1 positions before it (position 0 starts a new sequence).
        """
        if k.size(0) != self.k.size(0):
            raise ValueError(f"batch size {k.size(0)} does not match the KV cache's {self.k.size(0)}")
        T, start = input_pos.numel(), int(input_pos[0])
        if T > 1 and not bool((input_pos.diff() == 1).all()):
            raise ValueError("a sliding-window KV cache decodes consecutive positions only "
                             "(input_pos = start..start+T-1)")
        if start == 0:
            self.pos.fill_(-1)
        live = (self.pos >= 0) & (self.pos < start)  # later slots belong to a rewound continuation
        first_needed = max(0, start - self.window + 1)
        have = int((live & (self.pos >= first_needed)).sum())
        if have != start - first_needed:
            raise ValueError(f"the sliding-window KV cache holds the last {self.size} positions; it cannot "
                             f"continue at input_pos {start} (needs positions {first_needed}..{start - 1})")
        order = torch.argsort(torch.where(live, self.pos, -1))[self.size - int(live.sum()):]  # live, oldest first
        keys = torch.cat([self.k[:, :, order], k.to(self.k.dtype)], dim=2)  # (B, nqg, S, hs)
        values = torch.cat([self.v[:, :, order], v.to(self.v.dtype)], dim=2)
        kpos = torch.cat([self.pos[order], input_pos])  # (S,)
        n = min(T, self.size)  # only the last W keys of a long chunk can be needed later
        slots = input_pos[-n:] % self.size
        self.k.index_copy_(2, slots, k[:, :, -n:].to(self.k.dtype))
        self.v.index_copy_(2, slots, v[:, :, -n:].to(self.v.dtype))
        self.pos.index_copy_(0, slots, input_pos[-n:])
        return keys, values, kpos

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.pos.fill_(-1)
