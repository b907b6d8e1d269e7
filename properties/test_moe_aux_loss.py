"""MoE property 5, the load-balancing loss in closed form (Switch Transformer eq. 4-6, pooled over the MoE
layers of one forward as transformers pools them). Over the M = (tokens x layers) routings of a forward,
with S_m the k kept experts and p_m the router probabilities:

    f_i = |{m : i in S_m}| / (M k),   P_i = (1/M) sum_m p_m,i,   aux = N sum_i f_i P_i,

declared convention: f sums to 1, so aux == 1 for perfectly uniform routing (uniform P or uniform f),
and 1 / M <= aux <= N (P_i <= 1 gives the upper bound; each token's kept experts carry at least k/N of its
own probability mass, which gives sum_i f_i P_i >= 1 / (M N)). transformers' f sums to k: its aux_loss is k aux.

gpt-internal (the model's ``aux_loss()`` against the formula recomputed from router weights and measured
routing); the generic bounds on any subject with capability ``aux_loss`` are in test_moe_aux_loss_bounds.
Float64, the summation-order bound.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close64, build, draw_config, gpt_only
from properties.moe_cases import router_probs, routing_matrix
from strategies import seeds, token_batches

pytestmark = pytest.mark.gpt_internal


def _draw_model(data, subject, **fixed):
    config = draw_config(data, subject, mlp_class_name="MoE", **fixed)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    idx = data.draw(token_batches(config), label="idx")
    return config, model, idx


def _layer_inputs(model, idx):
    """The input of each block's MoE in a forward of idx, captured by hooks."""
    seen = []
    hooks = [b.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0])) for b in model.blocks]
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for h in hooks:
            h.remove()
    return seen


@given(data=st.data())
def test_aux_loss_is_the_switch_closed_form(subject, data):
    """model.aux_loss() == N sum_i f_i P_i with f from the measured routing and P from the router weights."""
    gpt_only(subject)
    config, model, idx = _draw_model(data, subject)
    inputs = _layer_inputs(model, idx)
    aux = model.aux_loss().detach()
    k, N = config.n_experts_per_token, config.n_experts
    kept = torch.cat([routing_matrix(b.mlp, h) != 0 for b, h in zip(model.blocks, inputs)])  # (M, N)
    P = torch.cat([router_probs(b.mlp, h) for b, h in zip(model.blocks, inputs)]).mean(dim=0)  # (N,)
    f = kept.double().sum(dim=0) / (kept.size(0) * k)
    assert_close64(aux, N * (f * P).sum(), config, "aux loss vs N sum f_i P_i")
    assert 1 / kept.size(0) - 1e-12 <= aux.item() <= N + 1e-12, f"aux {aux.item()} outside [1/M, N]"


@given(data=st.data())
def test_uniform_router_gives_aux_one(subject, data):
    """Zero router weights: P uniform (every score tied), so aux == 1 exactly up to rounding."""
    gpt_only(subject)
    config, model, idx = _draw_model(data, subject)
    with torch.no_grad():
        for b in model.blocks:
            b.mlp.router.weight.zero_()
        model(idx)
    one = torch.ones((), dtype=torch.float64)
    assert_close64(model.aux_loss().detach(), one, config, "aux loss of a uniform router")
