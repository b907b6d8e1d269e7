"""Property 12: the initial loss. At GPT-2 initialisation the cross-entropy of random tokens is close to
ln(vocab_size), the loss of a uniform prediction.

Derivation: the final norm leaves features of RMS <= 1, and the head's weights are N(0, 0.02^2), so each
logit is ~N(0, s^2) with s = 0.02 sqrt(n_embd). For Gaussian logits E[logsumexp] = ln V + s^2/2 to second
order and the target logit has mean 0 and spread s; so |loss - ln V| <= s^2 + 4 s covers the expectation
with room for four standard deviations of one shared weight draw. A model initialised at PyTorch's
default scale (N(0, 1) embeddings) lands n_embd / 2 above ln V.
"""
import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch.nn import functional as F

from properties.harness import draw_case


@pytest.mark.needs("init_scale")
@given(data=st.data())
def test_initial_loss_is_near_log_vocab(subject, data):
    """|CE(logits, random targets) - ln V| <= s^2 + 4 s with s = 0.02 sqrt(n_embd)."""
    config, model, idx = draw_case(data, subject)
    targets = torch.randint(0, config.vocab_size, idx.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = F.cross_entropy(subject.logits(model, idx).flatten(0, 1), targets.flatten()).item()
    s = 0.02 * math.sqrt(config.n_embd)
    tol = s * s + 4 * s
    assert abs(loss - math.log(config.vocab_size)) <= tol, (
        f"initial loss {loss:.4f} vs ln V = {math.log(config.vocab_size):.4f}: off by more than {tol:.4f}")
