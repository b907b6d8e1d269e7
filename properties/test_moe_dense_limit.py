"""MoE property 1, dense limit: with k = n_experts every expert is selected, and the layer is the
router-weighted sum of all experts (plus the shared expert, gated if configured):

    MoE(x) == sum_e p_e(x) E_e(x) + g(x) S(x),   p = softmax(W_r x),  g = sigmoid(w_g . x) or 1.

For every routing convention: with all experts kept, renormalising p (or the softmax of all logits) is p.
Float64, the summation-order bound (assert_close64).
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close64, gpt_only
from properties.moe_cases import draw_moe, router_probs

pytestmark = pytest.mark.gpt_internal


@given(data=st.data())
def test_moe_with_all_experts_is_the_router_weighted_sum(subject, data):
    """k = E: MoE(x) == sum_e softmax(W_r x)_e E_e(x) + g(x) S(x)."""
    gpt_only(subject)
    n = data.draw(st.integers(1, 5), label="n_experts = k")
    config, moe, x = draw_moe(data, subject, n_experts=n, n_experts_per_token=n)
    with torch.no_grad():
        p = router_probs(moe, x).reshape(*x.shape[:-1], n, 1)  # (B, T, E, 1)
        expected = (torch.stack([e(x) for e in moe.experts], dim=-2) * p).sum(dim=-2)  # (B, T, C)
        if moe.shared is not None:
            gate = torch.sigmoid(moe.shared_gate(x)) if moe.shared_gate is not None else 1.0
            expected = expected + gate * moe.shared(x)
        assert_close64(moe(x), expected, config, "MoE with k = n_experts vs the weighted sum of all experts")
