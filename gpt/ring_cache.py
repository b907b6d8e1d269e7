"""Key/value cache for a sliding-window layer, bounded by the window W (a ring buffer of W slots).

A chunk of T tokens at positions p..p+T-1 attends over the cached keys *and* its own T keys, concatenated,
and only afterwards are the chunk's last min(T, W) keys written into the ring (slot = position mod W). So a
prefill longer than W never overwrites keys that its own earlier queries still need (litgpt#2182: writing
first let early tokens of a long prefill read keys of later positions stored in their slots), and every
query sees exactly the keys p' - W < j <= p' that the full forward gives it; the mask comes from the stored
positions and validity, as for the full cache, so left-padded rows work unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .kv_cache import KVCache


class RingKVCache(nn.Module):
    """Holds keys and values (B, n_query_groups, W, hs) of the last W cache slots, with per row the position and
    validity of each (B, W), and which slot each ring cell holds (-1 while empty). ``max_seq_length`` is the
    number of slots it decodes (the length of the sequence), not its size."""

    def __init__(self, batch_size: int, n_query_groups: int, window: int, max_seq_length: int, head_size: int,
                 device=None, dtype=None, rollback: int = 0) -> None:
        super().__init__()
        size = min(window + rollback, max_seq_length)  # rollback: slots a caller may rewind and re-decode
        shape = (batch_size, n_query_groups, size, head_size)
        self.window, self._max_seq_length = window, max_seq_length
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("pos", torch.zeros(batch_size, size, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("valid", torch.zeros(batch_size, size, dtype=torch.bool, device=device),
                             persistent=False)
        self.register_buffer("slot", torch.full((size,), -1, dtype=torch.long, device=device), persistent=False)
        # which slots were ever written (one bool per slot, not per key): the gap check KVCache makes
        self.register_buffer("written", torch.zeros(max_seq_length, dtype=torch.bool, device=device),
                             persistent=False)

    check_no_gap = KVCache.check_no_gap

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def size(self) -> int:
        return self.k.size(2)

    def forward(self, input_pos: Tensor, k: Tensor, v: Tensor, end: int, pos: Tensor,
                valid: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Keys and values (B, nqg, S, hs) this chunk attends, cached then new, with their positions and
        validity (B, S); then the chunk's last min(T, W) keys are stored. ``input_pos`` (T,) are the chunk's
        slots, consecutive; decoding may restart at a slot whose W - 1 predecessors the ring still holds
        (slot 0 starts a new sequence). ``end`` is unused: the ring knows what it holds."""
        if k.size(0) != self.k.size(0):
            raise ValueError(f"batch size {k.size(0)} does not match the KV cache's {self.k.size(0)}")
        T, start = input_pos.numel(), int(input_pos[0])
        if T > 1 and not bool((input_pos.diff() == 1).all()):
            raise ValueError("a sliding-window KV cache decodes consecutive slots only "
                             "(input_pos = start..start+T-1)")
        if start == 0:
            self.slot.fill_(-1)
        live = (self.slot >= 0) & (self.slot < start)  # later cells belong to a rewound continuation
        first_needed = max(0, start - self.window + 1)
        if int((live & (self.slot >= first_needed)).sum()) != start - first_needed:
            raise ValueError(f"the sliding-window KV cache holds the last {self.size} slots; it cannot continue "
                             f"at input_pos {start} (needs slots {first_needed}..{start - 1})")
        n_live = int(live.sum())
        order = torch.argsort(torch.where(live, self.slot, -1))[self.size - n_live:]  # live cells, oldest first
        valid = torch.ones_like(pos, dtype=torch.bool) if valid is None else valid
        keys = torch.cat([self.k[:, :, order], k.to(self.k.dtype)], dim=2)  # (B, nqg, S, hs)
        values = torch.cat([self.v[:, :, order], v.to(self.v.dtype)], dim=2)
        kpos = torch.cat([self.pos[:, order], pos], dim=1)  # (B, S)
        kvalid = torch.cat([self.valid[:, order], valid], dim=1)
        n = min(T, self.size)  # only the last `size` keys of a long chunk can be needed later
        cells = input_pos[-n:] % self.size
        self._check_eviction(cells, live, kpos, kvalid)
        self.k.index_copy_(2, cells, k[:, :, -n:].to(self.k.dtype))
        self.v.index_copy_(2, cells, v[:, :, -n:].to(self.v.dtype))
        self.pos.index_copy_(1, cells, pos[:, -n:])
        self.valid.index_copy_(1, cells, valid[:, -n:])
        self.slot.index_copy_(0, cells, input_pos[-n:])
        return keys, values, kpos, kvalid

    def _check_eviction(self, cells: Tensor, live: Tensor, kpos: Tensor, kvalid: Tensor) -> None:
        """Refuse to overwrite a real key that the row's next token (position newest + 1) still sees: with
        padding between real tokens a row's window spans more than W slots, which a ring of W cannot hold."""
        old_valid = self.valid[:, cells] & live[cells]  # (B, n): real keys of earlier slots, not rewound ones
        if not bool(old_valid.any()):
            return
        newest = torch.where(kvalid, kpos, torch.full_like(kpos, -1)).amax(dim=1, keepdim=True)  # (B, 1)
        needed = old_valid & (self.pos[:, cells] > newest + 1 - self.window)
        if bool(needed.any()):
            raise ValueError("a row has padding between its real tokens, so its sliding window spans more than "
                             f"W={self.window} cache slots; decode it without padding inside the row")

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.pos.zero_()
        self.valid.zero_()
        self.slot.fill_(-1)
        self.written.zero_()
