"""Properties of this project's building blocks against their defining formulas, in float64.

Each block is compared with a direct transcription of its paper definition: RMSNorm and LayerNorm
(normalised over the feature dimension, with epsilon), rotary embeddings as complex rotations of feature
pairs, attention as a per-head loop with an explicit causal mask, and the MLPs. They pin down what the
model-level invariants cannot see (an epsilon dropped, a weight not applied).
"""
import pytest
import math

import torch
from hypothesis import given, strategies as st

from gpt.attention import attention_probs, attend
from gpt.embedding import apply_rope, rope_cache
from gpt.mlp import build_mlp
from gpt.norm import build_norm
from properties.harness import draw_config, gpt_only
from strategies import seeds

pytestmark = pytest.mark.gpt_internal

TOL = 1e-12  # float64, a handful of operations on O(1) values


def _randn(data, *shape):
    g = torch.Generator().manual_seed(data.draw(seeds(), label="tensor seed"))
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@given(data=st.data())
def test_norm_matches_definition(subject, data):
    """norm(x) == w * (x - mean) / sqrt(var + eps) + b (LayerNorm) or w * x / sqrt(mean(x^2) + eps) (RMSNorm)."""
    gpt_only(subject)
    config = draw_config(data, subject)
    norm = build_norm(config).double()
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(_randn(data, *p.shape))
    x = _randn(data, 3, 5, config.n_embd) * data.draw(st.sampled_from([1e-3, 1.0, 10.0]), label="input scale")
    if config.norm_class_name == "RMSNorm":
        expected = norm.weight * x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.norm_eps)
    else:
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        expected = norm.weight * (x - mean) / torch.sqrt(var + config.norm_eps)
        expected = expected + (norm.bias if norm.bias is not None else 0)
    assert (norm(x) - expected).abs().max() <= TOL * (1 + expected.abs().max())


@given(data=st.data())
def test_rope_is_a_rotation_of_feature_pairs(subject, data):
    """apply_rope rotates (x_i, x_{i+h}) as the complex number x_i + j x_{i+h} times e^{j p theta_i},
    theta_i = base^(-2i/n) for i < h = n // 2, and leaves features >= 2h untouched."""
    gpt_only(subject)
    config = draw_config(data, subject, position_embedding="rope")
    n, hs = config.rope_n_elem, config.head_size
    T = config.block_size
    x = _randn(data, 2, 3, T, hs)
    pos = torch.arange(T)
    out = apply_rope(x, *rope_cache(pos, n, config.rope_base, torch.float64))
    h = n // 2
    theta = config.rope_base ** (-2 * torch.arange(h, dtype=torch.float64) / n)
    z = torch.complex(x[..., :h], x[..., h : 2 * h]) * torch.polar(torch.ones(T, h, dtype=torch.float64),
                                                                   pos[:, None] * theta)
    expected = torch.cat([z.real, z.imag, x[..., 2 * h :]], dim=-1)
    assert (out - expected).abs().max() <= TOL


@given(data=st.data())
def test_attention_matches_per_head_loop(subject, data):
    """Every backend on CPU equals, head by head, softmax(q k^T / sqrt(hs) + causal mask) v where query
    head h reads kv group h // (n_head / n_query_groups)."""
    gpt_only(subject)
    config = draw_config(data, subject)
    nh, g, hs, T = config.n_head, config.n_query_groups, config.head_size, config.block_size
    q, k, v = _randn(data, 2, nh, T, hs), _randn(data, 2, g, T, hs), _randn(data, 2, g, T, hs)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    heads = []
    for h in range(nh):
        kv = h // (nh // g)
        scores = q[:, h] @ k[:, kv].transpose(-1, -2) / math.sqrt(hs)
        heads.append(torch.softmax(scores.masked_fill(~causal, -math.inf), dim=-1) @ v[:, kv])
    expected = torch.stack(heads, dim=1)
    for backend in subject.space.backends:
        assert (attend(q, k, v, None, 0.0, backend) - expected).abs().max() <= TOL, backend
    probs = attention_probs(q, k, None, 1 / math.sqrt(hs))
    assert (probs.masked_select(~causal) == 0).all(), "attention weight above the diagonal"


@given(data=st.data())
def test_mlp_matches_definition(subject, data):
    """GptNeoxMLP = proj(gelu(fc x)); LLaMAMLP = proj(silu(fc_1 x) * fc_2 x); GemmaMLP = proj(gelu(fc_1 x) * fc_2 x)."""
    gpt_only(subject)
    config = draw_config(data, subject)
    if config.is_moe:  # the expert kinds are these MLPs; the MoE itself is test_moe_*'s
        config = config.replace(mlp_class_name=config.moe_expert_mlp)
    mlp = build_mlp(config).double()
    x = _randn(data, 2, 3, config.n_embd)
    if config.gelu_approximate == "tanh":  # Hendrycks & Gimpel's tanh approximation
        gelu = lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)))  # noqa: E731
    else:
        gelu = lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))  # noqa: E731
    if config.mlp_class_name == "GptNeoxMLP":
        expected = mlp.proj(gelu(mlp.fc(x)))
    else:
        act = (lambda t: t * torch.sigmoid(t)) if config.mlp_class_name == "LLaMAMLP" else gelu  # noqa: E731
        expected = mlp.proj(act(mlp.fc_1(x)) * mlp.fc_2(x))
    assert (mlp(x) - expected).abs().max() <= TOL * (1 + expected.abs().max())
