"""Goodness of fit with a stated false-alarm rate, derived from an exact tail bound (no scipy).

For N independent draws from a distribution p over K categories, count X_i ~ Binomial(N, p_i). Bernstein's
inequality bounds each tail exactly (not asymptotically):

    P(|X_i - N p_i| >= t) <= 2 exp(-t^2 / (2 (s_i^2 + t / 3))),   s_i^2 = N p_i (1 - p_i).

Setting the right side to alpha / K and solving the quadratic gives the threshold

    t_i = L / 3 + sqrt(L^2 / 9 + 2 L s_i^2),   L = ln(2 K / alpha),

and by the union bound over the K categories a correct sampler fails with probability <= alpha. A category
with p_i = 0 must have count 0 exactly (a correct sampler never draws it).
"""
from __future__ import annotations

import math

import torch

FALSE_ALARM = 1e-6


def count_thresholds(probs: torch.Tensor, n: int, alpha: float = FALSE_ALARM) -> torch.Tensor:
    """(K,) Bernstein thresholds t_i: |count_i - n p_i| >= t_i for some i with probability <= alpha."""
    p = probs.double()
    L = math.log(2 * p.numel() / alpha)
    var = n * p * (1 - p)
    return L / 3 + torch.sqrt(L * L / 9 + 2 * L * var)


def assert_counts_follow(counts: torch.Tensor, probs: torch.Tensor, what: str, alpha: float = FALSE_ALARM) -> None:
    """``counts`` (K,) of n draws follow ``probs`` (K,): support exact, each count within its threshold."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    n = int(counts.sum())
    outside = (probs == 0) & (counts > 0)
    assert not outside.any(), (f"{what}: drew categories {outside.nonzero().flatten().tolist()} that have "
                               "probability 0")
    dev = (counts - n * probs).abs()
    t = count_thresholds(probs, n, alpha)
    bad = dev >= t
    if bad.any():
        i = int((dev / t).argmax())
        raise AssertionError(f"{what}: category {i} drawn {int(counts[i])} times in {n}, expected {n * probs[i]:.1f} "
                             f"+- {t[i]:.1f} (Bernstein bound, false-alarm rate {alpha:g}); probs {probs.tolist()}")


def draw_counts(draws: torch.Tensor, K: int) -> torch.Tensor:
    return torch.bincount(draws.flatten().long(), minlength=K)
