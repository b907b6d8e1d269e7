"""The sampling distribution written out from its definition, one row at a time, in float64 (the
reference the sampler properties compare a subject against), and strategies for sampler arguments."""
from __future__ import annotations

import math
from typing import Optional

import torch
from hypothesis import strategies as st

# a top-p boundary closer than this to a prefix mass is ambiguous under any rounding: not drawn
BOUNDARY_MARGIN = 1e-9


def top_k_set(z: list[float], top_k: Optional[int]) -> set[int]:
    """Indices whose scaled logit is >= the k-th largest (every token tied at the boundary is kept)."""
    if top_k is None or top_k >= len(z):
        return set(range(len(z)))
    kth = sorted(z, reverse=True)[top_k - 1]
    return {i for i, v in enumerate(z) if v >= kth}


def restricted_softmax(z: list[float], keep: set[int]) -> list[float]:
    top = max(z[i] for i in keep)
    w = [math.exp(z[i] - top) if i in keep else 0.0 for i in range(len(z))]
    s = sum(w)
    return [x / s for x in w]


def top_p_bounds(r: list[float], top_p: float) -> tuple[set[int], set[int], float]:
    """(must, may, b) for distribution r: with b the probability of the last token of the smallest
    descending prefix whose mass is >= top_p, the kept set contains ``must`` = {r > b} and lies within
    ``may`` = {r >= b} (which tokens tied at b are kept is an implementation's tie rule)."""
    ordered = sorted((x for x in r if x > 0), reverse=True)
    mass, b = 0.0, ordered[-1]
    for x in ordered:
        mass += x
        if mass >= top_p:
            b = x
            break
    return {i for i, x in enumerate(r) if x > b}, {i for i, x in enumerate(r) if x >= b and x > 0}, b


def near_boundary(r: list[float], top_p: float) -> bool:
    """True if some prefix mass of the sorted distribution is within BOUNDARY_MARGIN of top_p."""
    mass = 0.0
    for x in sorted(r, reverse=True):
        mass += x
        if abs(mass - top_p) <= BOUNDARY_MARGIN:
            return True
    return False


@st.composite
def sampler_args(draw, max_vocab: int = 12):
    """(logits (B, V) float64 on a coarse grid, so ties are common; temperature; top_k; top_p)."""
    B = draw(st.integers(1, 3), label="rows")
    V = draw(st.integers(1, max_vocab), label="vocab")
    grid = st.integers(-12, 12).map(lambda v: v / 4)
    rows = draw(st.lists(st.lists(grid, min_size=V, max_size=V), min_size=B, max_size=B), label="logits")
    temperature = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.1, 4.0)), label="temperature")
    top_k = draw(st.one_of(st.none(), st.integers(1, V + 2)), label="top_k")
    top_p = draw(st.one_of(st.none(), st.just(1.0), st.floats(0.01, 1.0)), label="top_p")
    return torch.tensor(rows, dtype=torch.float64), temperature, top_k, top_p


def reference_row(logits: list[float], temperature: float, top_k, top_p):
    """(r, must, may): r = softmax(z / T) over the top-k set, and the top-p bounds on the kept set
    (must == may == the top-k set without top-p)."""
    z = [v / temperature for v in logits]
    keep = top_k_set(z, top_k)
    r = restricted_softmax(z, keep)
    if top_p is None or top_p >= 1:
        return r, keep, keep
    must, may, _ = top_p_bounds(r, top_p)
    return r, must, may
