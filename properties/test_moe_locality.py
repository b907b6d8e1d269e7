"""MoE property 3, routing locality: routing is per token, so a token's output is a function of that token
alone, whatever else is in the batch (dropless: no capacity shared between tokens):

    MoE(x)[b, t] == MoE(x[b, t] as a batch of one token)   for every (b, t).

At model level this is what test_batch_independence and test_causality check for MoE configs (the gpt space
draws them); here the layer itself. Float64, the summation-order bound.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close64, gpt_only
from properties.moe_cases import draw_moe

pytestmark = pytest.mark.gpt_internal


@given(data=st.data())
def test_each_token_is_routed_on_its_own(subject, data):
    """MoE(x)[b, t] == MoE(x[b:b+1, t:t+1])[0, 0]."""
    gpt_only(subject)
    config, moe, x = draw_moe(data, subject)
    with torch.no_grad():
        y = moe(x)
        alone = torch.stack([torch.stack([moe(x[b : b + 1, t : t + 1])[0, 0] for t in range(x.size(1))])
                             for b in range(x.size(0))])
    assert_close64(y, alone, config, "MoE of the batch vs each token alone")
