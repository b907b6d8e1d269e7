"""Real-world inputs: padded batches (left or right, any pad ids), packed rows, ragged start positions."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from gpt.config import Config


@dataclass(frozen=True)
class PaddedBatch:
    """``idx`` (B, W) with ``mask`` (B, W) (1 real, 0 padding); row b holds ``lengths[b]`` real tokens,
    padded on ``sides[b]`` ("left" or "right") with arbitrary pad ids."""

    idx: torch.Tensor
    mask: torch.Tensor
    lengths: tuple
    sides: tuple

    def real(self, b: int) -> torch.Tensor:
        """Row b's real tokens, (1, lengths[b])."""
        return self.idx[b : b + 1][:, self.mask[b].bool()]

    def real_slice(self, b: int) -> slice:
        """Where row b's real tokens sit in the padded row."""
        W, n = self.idx.size(1), self.lengths[b]
        return slice(W - n, W) if self.sides[b] == "left" else slice(0, n)


@st.composite
def padded_batches(draw, config: Config, max_batch: int = 3, min_real: int = 1, sides=("left", "right"),
                   max_width: int | None = None) -> PaddedBatch:
    """Rows of different real lengths (>= ``min_real``; 0 gives all-padding rows) in one (B, W) batch.

    Pad lengths run from 0 to W - min_real (padding longer than the row's real part included); each row
    draws its own side from ``sides``; pad ids are drawn per position, so any id, also real-looking ones.
    """
    W = draw(st.integers(max(1, min_real), min(config.block_size, max_width or config.block_size)), label="width W")
    B = draw(st.integers(1, max_batch), label="batch size")
    ids = st.integers(0, config.vocab_size - 1)
    rows, masks, lengths, row_sides = [], [], [], []
    for b in range(B):
        n = draw(st.integers(min_real, W), label=f"row {b} real length")
        side = draw(st.sampled_from(sides), label=f"row {b} pad side")
        real = draw(st.lists(ids, min_size=n, max_size=n), label=f"row {b} tokens")
        pad = draw(st.lists(ids, min_size=W - n, max_size=W - n), label=f"row {b} pad ids")
        rows.append(pad + real if side == "left" else real + pad)
        masks.append([0] * (W - n) + [1] * n if side == "left" else [1] * n + [0] * (W - n))
        lengths.append(n)
        row_sides.append(side)
    return PaddedBatch(torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long),
                       tuple(lengths), tuple(row_sides))


@st.composite
def repadded(draw, batch: PaddedBatch, vocab_size: int) -> torch.Tensor:
    """The same batch with every pad position given a fresh drawn id (real tokens unchanged)."""
    pads = int((batch.mask == 0).sum())
    new = draw(st.lists(st.integers(0, vocab_size - 1), min_size=pads, max_size=pads), label="new pad ids")
    idx = batch.idx.clone()
    idx[batch.mask == 0] = torch.tensor(new, dtype=torch.long)
    return idx


@dataclass(frozen=True)
class PackedRows:
    """``idx`` (B, T) holding sequences back to back; ``segment_ids`` (B, T) contiguous runs of distinct
    (not necessarily sorted) ids; ``spans[b]`` lists row b's (start, length) per sequence."""

    idx: torch.Tensor
    segment_ids: torch.Tensor
    spans: tuple


@st.composite
def packed_rows(draw, config: Config, max_batch: int = 2, max_segments: int = 4) -> PackedRows:
    T = draw(st.integers(1, config.block_size), label="packed length T")
    B = draw(st.integers(1, max_batch), label="batch size")
    ids = st.integers(0, config.vocab_size - 1)
    rows, segs, spans = [], [], []
    for b in range(B):
        cuts = draw(st.lists(st.integers(1, T - 1), max_size=max_segments - 1, unique=True), label=f"row {b} cuts") \
            if T > 1 else []
        bounds = [0, *sorted(cuts), T]
        labels = draw(st.lists(st.integers(0, 1000), min_size=len(bounds) - 1, max_size=len(bounds) - 1, unique=True),
                      label=f"row {b} segment ids")
        row_spans = tuple((bounds[i], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1))
        segs.append([labels[i] for i, (_, n) in enumerate(row_spans) for _ in range(n)])
        rows.append(draw(st.lists(ids, min_size=T, max_size=T), label=f"row {b} tokens"))
        spans.append(row_spans)
    return PackedRows(torch.tensor(rows, dtype=torch.long), torch.tensor(segs, dtype=torch.long), tuple(spans))


@st.composite
def ragged_starts(draw, config: Config, B: int, T: int) -> torch.Tensor:
    """position_ids (B, T): row b runs s_b, s_b + 1, ..., with its own start s_b in [0, block_size - T]."""
    starts = draw(st.lists(st.integers(0, config.block_size - T), min_size=B, max_size=B), label="row starts")
    return torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(T)[None, :]


@st.composite
def segment_positions(draw, spans, block_size: int | None = None, min_step: int = 1, max_step: int = 3,
                      starts: bool = True, every_run: bool = False) -> torch.Tensor:
    """position_ids (B, T) for packed rows (``PackedRows.spans``): each run starts at its own drawn position
    (0 with ``starts=False``) and steps by 1 (consecutive, as masks.layout counts), or, in runs drawn "gapped",
    by steps in [min_step, max_step] (0 repeats a position; ``every_run``: every run is gapped). With
    ``block_size`` every position is below it."""
    rows = []
    for b, row_spans in enumerate(spans):
        row = []
        for r, (_, n) in enumerate(row_spans):
            steps = [1] * (n - 1)
            fits = block_size is None or (n - 1) * max_step < block_size
            if fits and (every_run or draw(st.booleans(), label=f"row {b} run {r} gapped")):
                steps = draw(st.lists(st.integers(min_step, max_step), min_size=n - 1, max_size=n - 1),
                             label=f"row {b} run {r} steps")
            top = 3 if block_size is None else block_size - 1 - sum(steps)
            start = draw(st.integers(0, top), label=f"row {b} run {r} start") if starts else 0
            row += list(itertools.accumulate(steps, initial=start))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)
