"""Property: GPT-2 initialisation (Radford et al. 2019; nanoGPT, litgpt). Every Linear and Embedding
weight is i.i.d. N(0, 0.02^2) except the residual projections of each block (attn.proj and mlp.proj),
whose std is 0.02 / sqrt(2 n_layer) so that the residual stream's variance stays O(1) with depth; every
Linear bias is zero; every norm starts as the identity map (weight 1, bias 0).

Statistics, per weight tensor of N entries and claimed std sigma: S = sum(w^2) / sigma^2 is chi-square
with N degrees of freedom, and sum(w) / (sigma sqrt N) is standard normal. A tensor is rejected when S
lies in either chi-square tail beyond probability 1e-9 (exact, through the regularised incomplete gamma
function) or when |z| > 6.1 (two-sided 1e-9): a correct initialisation fails about once per 10^9
tensors, while a variance off by the factor 2 n_layer >= 2 is rejected as soon as N is a few hundred,
which the drawn sizes reach many times per run.
"""
import pytest
import math
import re

import torch
from hypothesis import given, strategies as st

from properties.harness import build, draw_config, gpt_only
from strategies import seeds

pytestmark = pytest.mark.gpt_internal

TAIL = 1e-9
Z_MAX = 6.1  # P(|N(0, 1)| > 6.1) ~ 1.1e-9
# attn.proj and mlp.proj; in an MoE every routed and shared expert's proj
RESIDUAL_PROJECTIONS = re.compile(r"\.(attn|mlp|mlp\.experts\.\d+|mlp\.shared)\.proj\.weight$")


def _assert_gaussian(name: str, w: torch.Tensor, sigma: float) -> None:
    w = w.detach().double().flatten()
    n = w.numel()
    s = (w.square().sum() / sigma**2).reshape(())
    half = torch.tensor(n / 2, dtype=torch.float64)
    below, above = torch.special.gammainc(half, s / 2).item(), torch.special.gammaincc(half, s / 2).item()
    rms = math.sqrt(s.item() / n) * sigma
    assert below > TAIL and above > TAIL, (
        f"{name}: std {rms:.4g} over {n} entries is not the claimed {sigma:.4g} "
        f"(chi-square tails {below:.2e} / {above:.2e})")
    z = w.sum().item() / (sigma * math.sqrt(n))
    assert abs(z) <= Z_MAX, f"{name}: mean {w.mean().item():.3g} is {z:.1f} standard errors from 0"


@given(data=st.data())
def test_initialisation_follows_gpt2(subject, data):
    """weights ~ N(0, 0.02^2), residual projections ~ N(0, (0.02 / sqrt(2 n_layer))^2), biases 0, norms identity."""
    gpt_only(subject)
    config = draw_config(data, subject, size=data.draw(st.sampled_from(["tiny", "small"]), label="size"))
    model = build(subject, config, data.draw(seeds(), label="seed"))
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        owner = type(modules[name.rsplit(".", 1)[0]]).__name__
        if name.endswith(".bias"):
            expected = 0.0
        elif owner in ("LayerNorm", "RMSNorm"):
            expected = 1.0
        else:
            sigma = 0.02 / math.sqrt(2 * config.n_layer) if RESIDUAL_PROJECTIONS.search(name) else 0.02
            _assert_gaussian(name, p, sigma)
            continue
        assert torch.equal(p, torch.full_like(p, expected)), f"{name} ({owner}) does not start at {expected}"
