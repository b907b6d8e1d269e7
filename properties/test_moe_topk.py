"""MoE property 4, top-k bookkeeping. With p = softmax(W_r x) and W[n, e] the weight the layer gives expert e
for token n (measured with marker experts, properties.moe_cases.routing_matrix):

    |{e : W[n, e] != 0}| == k,   supp W[n] == the k largest p_n (ties: the lower expert index wins),
    W[n, e] == p_e                     (softmax_topk),
    W[n, e] == p_e / sum_{j in S} p_j  (softmax_topk_renorm, topk_softmax), so sum_e W[n, e] == 1.

Float64 with the summation-order bound; the tie rule is checked on exact ties (a zero router).
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close64, gpt_only
from properties.moe_cases import draw_moe, router_probs, routing_matrix

pytestmark = pytest.mark.gpt_internal


def _expected_weights(p: torch.Tensor, k: int, convention: str) -> torch.Tensor:
    """The convention's (N, E) weights from p alone: keep the k largest, the lower index first among equals."""
    keep = torch.zeros_like(p, dtype=torch.bool)
    for n in range(p.size(0)):
        keep[n, sorted(range(p.size(1)), key=lambda e: (-p[n, e].item(), e))[:k]] = True
    w = torch.where(keep, p, torch.zeros_like(p))
    if convention != "softmax_topk":
        w = w / w.sum(dim=-1, keepdim=True)
    return w


@given(data=st.data())
def test_exactly_k_experts_the_largest_scores_with_the_declared_weights(subject, data):
    """supp W[n] = top-k of p_n, |supp| = k, weights p (or p renormalised over the kept experts)."""
    gpt_only(subject)
    config, moe, x = draw_moe(data, subject)
    W = routing_matrix(moe, x)
    p = router_probs(moe, x).detach()
    assert ((W != 0).sum(dim=-1) == config.n_experts_per_token).all(), f"experts per token: {(W != 0).sum(-1)}"
    expected = _expected_weights(p, config.n_experts_per_token, config.moe_routing)
    assert_close64(W, expected, config, f"routing weights ({config.moe_routing})")
    if config.moe_routing != "softmax_topk":
        assert_close64(W.sum(dim=-1), torch.ones(W.size(0), dtype=W.dtype), config, "kept weights sum")


@given(data=st.data())
def test_ties_go_to_the_lower_expert_index(subject, data):
    """A zero router gives every expert the score 0 exactly: the k lowest indices are kept.

    (Identical router rows are not a way to make ties: BLAS may round different output columns of the same
    product differently, so their scores can differ in the last bit.)"""
    gpt_only(subject)
    config, moe, x = draw_moe(data, subject, n_shared_experts=0)
    with torch.no_grad():
        moe.router.weight.zero_()
    W = routing_matrix(moe, x)
    k, E = config.n_experts_per_token, config.n_experts
    kept = torch.zeros(E, dtype=torch.bool)
    kept[:k] = True
    assert (W != 0).eq(kept).all(), f"with all scores tied, kept {(W != 0).int().tolist()}, expected experts 0..{k - 1}"
