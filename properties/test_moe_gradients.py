"""MoE property 6, gradients. In float64, away from top-k ties:

* gradcheck: d MoE(x) / d (x, W_r, theta_experts) from autograd matches central finite differences (the
  strategy keeps the gap between the k-th and (k+1)-th router score above 1e-3, far beyond what the
  finite-difference step 1e-6 can move a score, so no perturbation changes which experts are kept);
* sparsity: the gradient of token n's output reaches exactly its kept experts: for e not in S_n every
  parameter of E_e gets exactly 0 from d MoE(x)[n], and each kept expert gets a non-zero gradient.

Also the active parameter count: Config.param_count(active=True) == all parameters minus, per layer, the
n_experts - k routed experts a token does not use (counted from the built model).
"""
import pytest
import torch
from hypothesis import assume, given, strategies as st

from properties.harness import gpt_only
from properties.moe_cases import draw_moe, router_probs, routing_matrix

pytestmark = pytest.mark.gpt_internal
TIE_GAP = 1e-3


def _score_gap(p: torch.Tensor, k: int) -> float:
    if k == p.size(-1):
        return float("inf")
    top = p.topk(k + 1, dim=-1).values  # (N, k + 1)
    return (top[:, k - 1] - top[:, k]).min().item()


@given(data=st.data())
def test_gradcheck_through_router_and_selected_experts(subject, data):
    """autograd == finite differences for x, the router weight and every expert parameter."""
    gpt_only(subject)
    config, moe, x = draw_moe(data, subject)
    assume(_score_gap(router_probs(moe, x).detach(), config.n_experts_per_token) > TIE_GAP)
    names, params = zip(*moe.named_parameters())
    x = x.requires_grad_(True)

    def f(x, *values):
        return torch.func.functional_call(moe, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_(True) for p in params]), fast_mode=True)


@given(data=st.data())
def test_unselected_experts_get_exactly_zero_gradient(subject, data):
    """d MoE(x)[n] / d theta_e == 0 exactly for e not in S_n, != 0 for e in S_n."""
    gpt_only(subject)
    config, moe, x = draw_moe(data, subject)
    kept = routing_matrix(moe, x) != 0  # (N, E)
    n = data.draw(st.integers(0, kept.size(0) - 1), label="token")
    moe.zero_grad()
    moe(x).reshape(-1, x.size(-1))[n].sum().backward()
    for e, expert in enumerate(moe.experts):
        grads = torch.cat([p.grad.flatten() if p.grad is not None else p.new_zeros(p.numel())
                           for p in expert.parameters()])
        if kept[n, e]:
            assert grads.abs().max() > 0, f"kept expert {e} of token {n} gets no gradient"
        else:
            assert (grads == 0).all(), f"expert {e} is not kept by token {n} but gets gradient {grads.abs().max():.3e}"


@given(data=st.data())
def test_active_param_count(subject, data):
    """param_count(active=True) == total - n_layer (n_experts - k) |expert|, param_count() == total."""
    from gpt.moe import MoE
    from properties.harness import draw_config

    gpt_only(subject)
    config = draw_config(data, subject, mlp_class_name="MoE")
    with torch.device("meta"):
        moe = MoE(config)  # the whole model's count is test_param_count's
    expert = sum(p.numel() for p in moe.experts[0].parameters())
    unused = config.n_layer * (config.n_experts - config.n_experts_per_token) * expert
    expected = config.param_count() - unused
    assert config.param_count(active=True) == expected, (config.param_count(active=True), expected)
