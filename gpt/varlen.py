"""Packed rows (segment_ids) as flash-attn's variable-length batches: the plumbing, with the kernel injected.

flash-attn's varlen kernels take the tokens of all sequences back to back, q (N, nh, hs), and int32
``cu_seqlens`` (R + 1,), the start offsets of the R sequences followed by N; with causal=True and
window_size=(W - 1, 0), token i of a sequence sees tokens j of the same sequence with i - W < j <= i.

A packed batch (B, T) flattens row-major to N = B T tokens, and every *run* of equal segment ids (a run
starts at each row's first token and wherever the id changes) becomes one sequence. That reproduces the
rule of gpt.masks.visible / gpt.mask_spec (valid key, same segment, kpos <= qpos, window kpos > qpos - W)
exactly iff

  - there is no padding (kvalid all True or None), the queries are the keys (no KV cache), no dense mask;
  - each segment id is ONE contiguous run in its row (two runs of one id would see each other);
  - positions strictly increase within a run (then kpos <= qpos is j <= i);
  - with a window W, no token's last W tokens of its run span more than W - 1 positions:
    pos[i] - pos[i - d] <= W - 1 with d = min(W - 1, i's offset in its run). Consecutive positions (each
    step +1, what masks.layout gives without position_ids) pass for every W; W = 1 and W = None need only
    the strict increase.

``pack`` checks exactly these ("iff" for positions non-decreasing within each run, the only ones the model
lets through; one corner is refused although it would be exact: two runs of one id whose positions lie at
least W apart). Refusals are ValueErrors naming the argument, never a silently different mask.

Computing cu_seqlens and max_seqlen reads the data (host syncs), so the model packs once per forward, for
every window its layers use, before the blocks (``pack_layout``, a graph break outside the compiled blocks
under torch.compile), and each layer reads the result from its MaskSpec.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor

from .eager import outside_graphs

_KERNELS = "attn_backend='flex', 'sdpa' or 'math'"

# (q (N, nh, hs), k, v (N, nqg, hs), cu_seqlens (R + 1,) int32, max_seqlen, window_size (left, right)) -> (N, nh, hs)
VarlenKernel = Callable[[Tensor, Tensor, Tensor, Tensor, int, tuple[int, int]], Tensor]


@dataclass(frozen=True)
class Packing:
    cu_seqlens: Tensor  # (R + 1,) int32: run r is tokens cu_seqlens[r] .. cu_seqlens[r + 1] - 1 of the B T
    max_seqlen: int  # the longest run (a host int: the kernels size their launch grid by it)
    refusals: dict  # window W (None: global) -> None when varlen is exact for it, else why not (the error)

    def refusal(self, window: Optional[int]) -> Optional[str]:
        if window not in self.refusals:
            raise ValueError(f"packed attention was planned for windows {sorted(self.refusals, key=str)}, "
                             f"not sliding_window={window}")
        return self.refusals[window]


def window_size(window: Optional[int]) -> tuple[int, int]:
    """flash-attn's (left, right) for a sliding window of W keys including the query; (-1, -1) is unbounded."""
    return (-1, -1) if window is None else (window - 1, 0)


def run_starts(seg: Tensor) -> Tensor:
    """(B, T) bool: True at the first token of each run of equal segment ids (every row's first token)."""
    starts = torch.ones_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    return starts


def pack(pos: Tensor, seg: Tensor, valid: Optional[Tensor], windows: Iterable[Optional[int]]) -> Packing:
    """The runs of ``seg`` (B, T) as varlen sequences, and for each window whether that is exact.

    ``pos`` (B or 1, T) token positions, ``valid`` (B, T) bool (False at padding) or None. Two host syncs:
    the run offsets (a data-dependent size) and one list of every check and the longest run.
    """
    B, T = seg.shape
    pos = pos.expand(B, T)
    starts = run_starts(seg)  # (B, T)
    first = starts.flatten().nonzero().squeeze(1)  # (R,) flat index of each run's first token
    cu_seqlens = torch.cat([first, first.new_full((1,), B * T)]).to(torch.int32)  # (R + 1,)
    longest = cu_seqlens.diff().max()
    # each id one run: per row, the distinct ids (changes in the sorted row, + 1) number the runs
    ranked = seg.sort(dim=1).values
    distinct = (ranked[:, 1:] != ranked[:, :-1]).sum(1) + 1  # (B,)
    contiguous = (distinct == starts.sum(1)).all()
    increasing = ((pos[:, 1:] > pos[:, :-1]) | starts[:, 1:]).all()
    unpadded = torch.ones((), dtype=torch.bool, device=seg.device) if valid is None else valid.all()
    idx = torch.arange(T, device=seg.device).expand(B, T)
    run_first = torch.where(starts, idx, 0).cummax(dim=1).values  # (B, T) index of the token's run start
    windows = list(dict.fromkeys(windows))  # distinct, in order
    spans = []
    for w in windows:
        if w is None:
            spans.append(torch.ones((), dtype=torch.bool, device=seg.device))
            continue
        back = torch.maximum(run_first, idx - (w - 1))  # (B, T) the farthest key of the window, in the run
        spans.append((pos - pos.gather(1, back) <= w - 1).all())
    checks = torch.stack([longest.long(), *(c.long() for c in (contiguous, increasing, unpadded, *spans))])
    longest, contiguous, increasing, unpadded, *spans = checks.tolist()  # the one host sync for all of them
    common = None
    if not unpadded:
        common = ("attention_mask: attn_backend='flash' takes packed rows without padding (flash-attn's varlen "
                  f"kernels have no key mask); use {_KERNELS}")
    elif not contiguous:
        common = f"segment_ids: each id must be one contiguous run per row for attn_backend='flash'; use {_KERNELS}"
    elif not increasing:
        common = ("position_ids: attn_backend='flash' needs positions strictly increasing within each segment "
                  f"(it masks by token order); use {_KERNELS}")
    refusals = {}
    for w, span in zip(windows, spans):
        refusals[w] = common or (None if span else (
            f"position_ids: with sliding_window={w}, attn_backend='flash' counts the window in tokens, so it needs "
            f"each segment's positions to step by 1 where they differ from token order; use {_KERNELS}"))
    return Packing(cu_seqlens, int(longest), refusals)


@outside_graphs  # data-dependent sizes and host syncs: one graph break, before the blocks
def pack_layout(layout, windows: Iterable[Optional[int]]):
    """``layout`` (a gpt.masks.Layout with segment ids) with its Packing for ``windows`` attached."""
    return dataclasses.replace(layout, varlen=pack(layout.pos, layout.segment, layout.valid, windows))


def flatten(x: Tensor) -> Tensor:
    """(B, H, T, D) -> (B T, H, D): the rows' tokens back to back, row-major (the order of cu_seqlens)."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B * T, H, D)


def unflatten(y: Tensor, B: int, T: int) -> Tensor:
    """(B T, H, D) -> (B, H, T, D), the inverse of ``flatten``."""
    return y.view(B, T, y.size(1), y.size(2)).transpose(1, 2)


def packed_attend(q: Tensor, k: Tensor, v: Tensor, spec, kernel: VarlenKernel) -> Tensor:
    """q (B, nh, T, hs), k and v (B, nqg, T, hs) under a MaskSpec with segment ids -> (B, nh, T, hs), through
    ``kernel`` on the runs; ValueError (naming the argument) where varlen cannot express ``spec`` exactly."""
    B, _, T, _ = q.shape
    if spec.allowed is not None:
        raise ValueError(f"attention_mask: attn_backend='flash' takes no dense mask; use {_KERNELS}")
    if k.size(-2) != T or not _same(spec.qpos, spec.kpos) or not _same(spec.qseg, spec.kseg):
        raise ValueError(f"segment_ids: attn_backend='flash' packs queries that are their own keys (no KV cache); "
                         f"use {_KERNELS}")
    packing = spec.varlen if spec.varlen is not None else pack(spec.qpos, spec.qseg, spec.kvalid, [spec.window])
    reason = packing.refusal(spec.window)
    if reason is not None:
        raise ValueError(reason)
    out = kernel(flatten(q), flatten(k), flatten(v), packing.cu_seqlens, packing.max_seqlen,
                 window_size(spec.window))  # (B T, nh, hs)
    return unflatten(out, B, T)


def _same(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
    """The model passes one tensor for both (no sync); a caller's equal copies are compared (one sync)."""
    return a is b or (a is not None and b is not None and a.shape == b.shape and bool(torch.equal(a, b)))
