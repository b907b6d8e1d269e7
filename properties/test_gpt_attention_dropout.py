"""Property: attention dropout drops attention probabilities (the GPT-2 / nanoGPT ``attn_dropout``).

In train mode, attend(q, k, v) == (M o P / (1 - p)) V with P = softmax(q k^T / sqrt(hs) + causal) and M a
0/1 mask: each query's weights on its keys are either dropped or rescaled, and the output is the
value-weighted sum of exactly those weights. The property reads the dropped weights back through
values V = [I | 1] (value j is the j-th unit vector with a trailing 1): the first S output features of a
query are its kept, rescaled weights, the last one is their sum. Dropping scores before the softmax,
dropping output features instead of weights, or forgetting the 1 / (1 - p) rescaling all break it.
"""
import pytest
import math

import torch
from hypothesis import given, strategies as st

from gpt.attention import attend, attention_probs
from properties.harness import draw_config, gpt_only
from strategies import seeds

pytestmark = pytest.mark.gpt_internal

TOL = 1e-12


@given(data=st.data())
def test_attention_dropout_rescales_kept_probabilities(subject, data):
    """train mode: attend(q, k, [I | 1]) == [D | D 1] with D_ij in {0, P_ij / (1 - p)} and D = 0 above the diagonal."""
    gpt_only(subject)
    config = draw_config(data, subject)
    p = data.draw(st.sampled_from([0.1, 0.3, 0.5]), label="attn_dropout")
    nh, g, hs, S = config.n_head, config.n_query_groups, config.head_size, config.block_size
    gen = torch.Generator().manual_seed(data.draw(seeds(), label="tensor seed"))
    B = data.draw(st.integers(1, 3), label="batch size")
    q = torch.randn(B, nh, S, hs, generator=gen, dtype=torch.float64)
    k = torch.randn(B, g, S, hs, generator=gen, dtype=torch.float64)
    eye = torch.eye(S, dtype=torch.float64)
    v = torch.cat([eye, torch.ones(S, 1, dtype=torch.float64)], dim=-1).expand(B, g, S, S + 1)
    probs = attention_probs(q, k, None, 1 / math.sqrt(hs))
    torch.manual_seed(data.draw(seeds(), label="dropout seed"))
    out = attend(q, k, v, None, p, config.attn_backend)
    kept = out[..., :S]
    rescaled = probs / (1 - p)
    is_kept_or_dropped = (kept == 0) | ((kept - rescaled).abs() <= TOL * (1 + rescaled))
    assert is_kept_or_dropped.all(), f"{config.attn_backend}: an attention weight is neither dropped nor P / (1 - p)"
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    assert (kept.masked_select(~causal) == 0).all(), "attention weight above the diagonal in train mode"
    assert (out[..., S] - kept.sum(-1)).abs().max() <= TOL * S, (
        f"{config.attn_backend}: the output is not the value-weighted sum of the kept attention weights")
