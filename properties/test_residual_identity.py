"""Residual identity: with every residual branch's output projection zeroed, each block is the identity.

For a subject naming those projections (capability "residual_projections": attention output and MLP down
projections, weights and biases) and mapping its weights to the reference's layout ("reference_weights",
which is how the formula reads the subject's embedding, final norm and head without touching its
internals), zeroing them gives, for token ids x at positions p = 0..T-1,

    logits(x) == norm_f(s wte[x] + wpe[p]) @ lm_head^T   (wpe only with learned positions; s = sqrt(n_embd)
                                                          with scale_embeddings, else 1)

plus, per layer, the biases of norms applied to a branch's output (sandwich and post placements: a
LayerNorm of 0 is its bias).

with norm_f LayerNorm (x - mean) / sqrt(var + eps) * g + b or RMSNorm x / sqrt(mean(x^2) + eps) * g, eps
= norm_eps, read from the subject's own weights, and with ``final_logit_softcap`` c the logits z become
c tanh(z / c). A residual added twice or dropped, a position table
added twice or not at all, a final norm skipped or ignoring eps, a head wired wrongly, all fail it.
Weights: the reference's scaled state (matrices x20, gains and biases perturbed, so they all matter).
Tolerance: the float64 summation-order bound (``harness.assert_close_subject``); no attention term remains.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from properties.harness import assert_close_subject, draw_config
from properties.reference import reference_model
from strategies import seeds, token_batches

pytestmark = pytest.mark.needs("residual_projections", "reference_weights")


def _final_norm(x: torch.Tensor, sd: dict, config) -> torch.Tensor:
    g, eps = sd["norm_f.weight"], config.norm_eps
    if config.norm_class_name == "RMSNorm":
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * g
    return x + sd["norm_f.bias"] if "norm_f.bias" in sd else x


@given(data=st.data())
def test_zeroed_residual_branches_leave_head_of_final_norm_of_embeddings(subject, data):
    """Projections zeroed: logits == norm_f(wte[x] (+ wpe[p])) @ lm_head^T, read from the subject's weights."""
    config = draw_config(data, subject)
    seed = data.draw(seeds(), label="seed")
    model = subject.build(config, seed, dtype=torch.float64).eval()
    subject.load_reference(model, reference_model(config, seed, scaled=True).state_dict(), config)
    names = subject.residual_projections(model)
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    assert names and not unknown, f"residual_projections names no parameter of the model: {unknown or names}"
    with torch.no_grad():
        for n in names:
            params[n].zero_()
        sd = subject.to_reference(model, dict(model.named_parameters()), config)
        # the reference's output projections: attn.proj and mlp.proj, or with MoE every expert's and the
        # shared expert's proj (mlp.experts.{e}.proj, mlp.shared.proj)
        outputs = [n for n in sd if n.startswith("blocks.") and n.endswith(".proj.weight")]
        assert len(outputs) >= 2 * config.n_layer, f"reference output projections missing: {outputs}"
        for n in outputs:
            assert not sd[n].any(), f"residual_projections left {n} (reference name) non-zero"
        idx = data.draw(token_batches(config), label="idx")
        x = sd["wte.weight"][idx]  # (B, T, C)
        if config.scale_embeddings:  # Gemma: sqrt(n_embd) rounded to the weights' dtype
            x = x * torch.tensor(config.n_embd ** 0.5, dtype=x.dtype)
        if config.position_embedding == "learned":
            x = x + sd["wpe.weight"][: idx.size(1)]
        for i in range(config.n_layer):  # a norm after a zeroed branch (sandwich, post) adds its bias
            for name in (f"blocks.{i}.post_attn_norm.bias", f"blocks.{i}.post_mlp_norm.bias"):
                x = x + sd[name] if name in sd else x
        expected = _final_norm(x, sd, config) @ sd["lm_head.weight"][: config.vocab_size].T
        if config.final_logit_softcap is not None:
            c = config.final_logit_softcap
            expected = c * torch.tanh(expected / c)
        got = subject.logits(model, idx)
    assert_close_subject(subject, got, expected, config, "logits with zeroed residual branches")
