"""MoE property 2, expert permutation equivariance. For a permutation pi of the experts, moving expert e to
slot pi(e) together with router row e leaves the layer and its load-balancing loss unchanged:

    MoE_pi(x) == MoE(x),   aux_pi == aux.

(Exact ties between router scores could be broken differently after the permutation; random float64
router rows have none, with probability 1.) Float64, the summation-order bound.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close64, gpt_only
from properties.moe_cases import draw_moe

pytestmark = pytest.mark.gpt_internal


@given(data=st.data())
def test_permuting_experts_with_router_rows_changes_nothing(subject, data):
    """MoE_pi(x) == MoE(x) and aux_pi == aux for experts and router rows permuted together."""
    from gpt.moe import load_balancing_loss

    gpt_only(subject)
    config, moe, x = draw_moe(data, subject)
    perm = data.draw(st.permutations(range(config.n_experts)), label="permutation")
    with torch.no_grad():
        y = moe(x)
        aux = load_balancing_loss([moe.last_routing], config.n_experts)
        moe.experts = torch.nn.ModuleList(moe.experts[e] for e in perm)
        moe.router.weight.copy_(moe.router.weight[list(perm)])
        y_pi = moe(x)
        aux_pi = load_balancing_loss([moe.last_routing], config.n_experts)
    assert_close64(y_pi, y, config, f"MoE output with experts permuted by {perm}")
    assert_close64(aux_pi, aux, config, f"aux loss with experts permuted by {perm}")
