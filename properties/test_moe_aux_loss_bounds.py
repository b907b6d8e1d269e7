"""MoE property 5, generic part: the load-balancing loss of any subject with capability ``aux_loss``
(declared convention: aux = N sum_i f_i P_i pooled over all tokens and MoE layers, f and P each summing to
1; see test_moe_aux_loss for the closed form on gpt). For a batch of M token-layer routings:

    1 / M <= aux <= N,
    aux(rows permuted) == aux,   aux(batch stacked with itself) == aux   (f and P are means over tokens).

The last two fail when the loss sums instead of averaging, or averages over the wrong axis. Float64,
the subject's summation-order bound.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, build, draw_config
from strategies import seeds, token_batches

pytestmark = pytest.mark.needs("aux_loss")


@given(data=st.data())
def test_aux_loss_bounds_and_pooling(subject, data):
    """1/M <= aux <= N; aux is invariant to permuting and duplicating the batch rows."""
    config = draw_config(data, subject, mlp_class_name="MoE")
    model = build(subject, config, data.draw(seeds(), label="seed"))
    idx = data.draw(token_batches(config), label="idx")
    perm = data.draw(st.permutations(range(idx.size(0))), label="row permutation")
    with torch.no_grad():
        _, aux = subject.logits_and_aux_loss(model, idx)
        _, aux_perm = subject.logits_and_aux_loss(model, idx[list(perm)])
        _, aux_twice = subject.logits_and_aux_loss(model, torch.cat([idx, idx]))
    M, N = idx.numel() * config.n_layer, config.n_experts
    assert 1 / M - 1e-12 <= aux.item() <= N + 1e-12, f"aux {aux.item()} outside [1/M = {1 / M:.4g}, N = {N}]"
    assert_close_subject(subject, aux_perm, aux, config, "aux loss with batch rows permuted")
    assert_close_subject(subject, aux_twice, aux, config, "aux loss of the batch stacked with itself")
