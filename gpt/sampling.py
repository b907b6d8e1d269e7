"""The sampler: a pure function from logits to token ids, and the distribution it draws from.

Declared conventions (the properties test exactly these):

* ``temperature == 0`` is greedy decoding whatever ``top_k`` / ``top_p`` say; greedy is ``argmax`` with
  the lowest index winning ties (``torch.argmax``'s documented rule).
* Order: temperature, then top-k, then top-p (transformers' order). Top-k does not depend on the
  temperature; top-p does, since it measures mass of softmax(logits / T) renormalised over the top-k set.
* Top-k keeps every token whose logit is >= the k-th largest: ties at the boundary are all kept, so the
  kept set never depends on sort order (transformers' ``TopKLogitsWarper`` rule).
* Top-p keeps the smallest prefix of the distribution sorted by decreasing probability whose mass is
  >= top_p (at least one token), again widened to every token tied with the last one kept.
* The kept set is computed in float64, so its boundary does not move with the logits' dtype.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def check_sampling_args(temperature, top_k, top_p) -> None:
    """ValueError/TypeError naming the argument and its allowed range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise TypeError(f"top_k must be None or an int >= 1, got {top_k!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be None (no limit) or an int >= 1, got {top_k}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
            raise TypeError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be None (no limit) or in (0, 1], got {top_p}")


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point torch.Tensor, got {getattr(logits, 'dtype', type(logits))}")
    if logits.dim() != 2 or logits.size(-1) < 1:
        raise ValueError(f"logits must have shape (B, vocab_size) with vocab_size >= 1, got {tuple(logits.shape)}")


def kept_mask(logits: Tensor, temperature: float, top_k: Optional[int] = None,
              top_p: Optional[float] = None) -> Tensor:
    """(B, V) bool: the tokens the sampler may draw (the argmax alone when temperature is 0)."""
    _check_logits(logits)
    check_sampling_args(temperature, top_k, top_p)
    logits = logits.double()
    if temperature == 0:
        greedy = logits.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, greedy, True)
    scaled = logits / temperature
    keep = torch.ones_like(scaled, dtype=torch.bool)
    if top_k is not None and top_k < scaled.size(-1):
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]  # (B, 1)
        keep = scaled >= kth
    if top_p is not None and top_p < 1:
        probs = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)
        sorted_probs = probs.sort(dim=-1, descending=True).values
        # smallest m with mass(top m) >= top_p: m - 1 prefixes fall short
        m = (sorted_probs.cumsum(-1) < top_p).sum(-1, keepdim=True).clamp(max=scaled.size(-1) - 1)
        last = sorted_probs.gather(-1, m)  # (B, 1) probability of the last kept token
        keep = keep & (probs >= last)
    return keep


def probs(logits: Tensor, temperature: float, top_k: Optional[int] = None, top_p: Optional[float] = None) -> Tensor:
    """(B, V) float64: the distribution ``sample`` draws from, softmax(logits / T) on the kept set
    (one-hot at the argmax for temperature 0)."""
    keep = kept_mask(logits, temperature, top_k, top_p)
    if temperature == 0:
        return keep.double()
    scaled = logits.double() / temperature
    return torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)


def sample(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
           generator: Optional[torch.Generator] = None) -> Tensor:
    """(B, 1) token ids drawn from ``probs(logits, ...)`` of (B, V) logits; greedy consumes no randomness."""
    if temperature == 0:
        check_sampling_args(temperature, top_k, top_p)
        _check_logits(logits)
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial(probs(logits, temperature, top_k, top_p), 1, generator=generator)
