"""Properties of how this project's verified building blocks are assembled, in float64.

``test_gpt_blocks`` pins each block (norms, RoPE, attention kernels, MLPs) to its paper formula. These
properties pin the wiring between them to the published architecture, which the model-level invariants
cannot see: a model with a residual connection dropped, the MLP of a parallel block reading the
post-attention stream, positions added twice, or the rotary slice widened is still causal, batch
independent, prefix consistent and cache consistent, only a different function.

- attention module: proj(concat_h softmax(rope(q_h) rope(k_g)^T / sqrt(hs) + causal) v_g), where
  qkv(x) = [q heads | k groups | v groups], head h of n_head reads group h // (n_head / n_query_groups)
  and the output features of head h are h * hs .. (h + 1) * hs (Vaswani et al. 2017; Ainslie et al. 2023);
  with a sliding window W the mask also needs j > i - W, soft-capping replaces the scores s by c tanh(s / c)
  before the mask, and a sink adds e^{sink_h} to head h's softmax denominator (Mistral, Gemma 2, GPT-OSS);
  with qk_norm, q and k are RMS-normalised before RoPE over each head's hs features ("per_head", Qwen3)
  or over all heads' features of a position ("all_heads", OLMo 2), times the norm's weight;
- block: x + a + mlp(norm_2(x + a)) with a = attn(norm_1(x)) (GPT-2, pre-norm), or x + a + mlp(norm_2(x))
  for a parallel residual (GPT-J / GPT-NeoX), with norm_1 in place of norm_2 when the norm is shared;
  "sandwich" placement: x + a + post_mlp(mlp(norm_2(x + a))) with a = post_attn(attn(norm_1 x)) (Gemma 2),
  "post": the same without norm_1 and norm_2 (OLMo 2);
- model: lm_head(norm_f(blocks(wte[idx] (* sqrt(n_embd) when scale_embeddings) + wpe[pos]))) restricted to
  the first vocab_size columns, the rotary tables of rope_n_elem features (with rope_scaling) at the token
  positions, lm_head = wte when tied, logits capped to c tanh(z / c) with a final soft-cap.

Parameters are redrawn at O(1) scale so that every term matters, and every reference is written from
parameters and formulas, reusing a module only where its own property has pinned it down.
"""
import pytest
import math

import torch
from hypothesis import given, strategies as st

from gpt.embedding import apply_rope, rope_cache
from properties.harness import assert_close64, build, draw_config, gpt_only
from strategies import seeds, token_batches

pytestmark = pytest.mark.gpt_internal


def _randomise(module, seed: int) -> None:
    """Every parameter ~ N(0, 1/fan_in) (weights) or N(0, 1) (vectors): O(1) activations everywhere."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = 1 / math.sqrt(p.size(-1)) if p.dim() > 1 else 1.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale)


def _linear(x, layer):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def _build(data, subject, config):
    """The subject's model for config with every parameter redrawn, and a function building the same model
    (same parameters) for another config of the same shapes, e.g. another attention backend."""
    seed, parameter_seed = data.draw(seeds(), label="seed"), data.draw(seeds(), label="parameter seed")

    def make(cfg):
        model = build(subject, cfg, seed)
        _randomise(model, parameter_seed)
        return model
    return make(config), make


def _case(data, subject, **config_kw):
    config = draw_config(data, subject, **config_kw)
    model, make = _build(data, subject, config)
    B = data.draw(st.integers(1, 3), label="batch size")
    T = data.draw(st.integers(1, config.block_size), label="sequence length")
    start = data.draw(st.integers(0, config.block_size - T), label="first position")
    g = torch.Generator().manual_seed(data.draw(seeds(), label="input seed"))
    x = torch.randn(B, T, config.n_embd, generator=g, dtype=torch.float64)
    pos = torch.arange(start, start + T)
    rope = None
    if config.position_embedding == "rope":
        rope = rope_cache(pos, config.rope_n_elem, config.rope_base, torch.float64, config.rope_scaling)
    return config, model, make, x, pos, rope


def _rms(x, weight, eps, n_dims: int):
    """x / sqrt(mean of x^2 over the last n_dims dimensions + eps) * weight (shaped like those dimensions)."""
    dims = tuple(range(-n_dims, 0))
    return x / torch.sqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps) * weight.reshape(x.shape[-n_dims:])


def reference_attention(attn, config, x, rope, layer=0):
    c = config
    B, T, _ = x.shape
    nh, g, hs = c.n_head, c.n_query_groups, c.head_size
    qkv = _linear(x, attn.qkv)
    q = qkv[..., : nh * hs].reshape(B, T, nh, hs).permute(0, 2, 1, 3)
    k = qkv[..., nh * hs : (nh + g) * hs].reshape(B, T, g, hs).permute(0, 2, 1, 3)
    v = qkv[..., (nh + g) * hs :].reshape(B, T, g, hs).permute(0, 2, 1, 3)
    if c.qk_norm == "per_head":  # (B, h, T, hs): over hs
        q, k = _rms(q, attn.q_norm.weight, c.norm_eps, 1), _rms(k, attn.k_norm.weight, c.norm_eps, 1)
    elif c.qk_norm == "all_heads":  # over (h, hs) at each position
        q = _rms(q.transpose(1, 2), attn.q_norm.weight, c.norm_eps, 2).transpose(1, 2)
        k = _rms(k.transpose(1, 2), attn.k_norm.weight, c.norm_eps, 2).transpose(1, 2)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    sliding = config.layer_types is None or config.layer_types[layer] == "sliding_attention"
    if config.sliding_window is not None and sliding:  # keys i - W < j <= i
        causal = causal & ~torch.ones(T, T, dtype=torch.bool).tril(-config.sliding_window)
    heads = []
    for h in range(nh):
        group = h // (nh // g)
        scores = q[:, h] @ k[:, group].transpose(-1, -2) / math.sqrt(hs)
        if c.attn_logit_softcap is not None:
            scores = c.attn_logit_softcap * torch.tanh(scores / c.attn_logit_softcap)
        e = torch.exp(scores.masked_fill(~causal, -math.inf))  # O(1) scores: no overflow
        denominator = e.sum(-1, keepdim=True)
        if attn.sinks is not None:  # e^{sink_h} joins the denominator only
            denominator = denominator + torch.exp(attn.sinks[h])
        heads.append(e / denominator @ v[:, group])
    return _linear(torch.cat(heads, dim=-1), attn.proj)


@given(data=st.data())
def test_attention_module_matches_definition(subject, data):
    """CausalSelfAttention(x, rope) == proj(concat_h softmax(rope(q_h) rope(k_g(h))^T / sqrt(hs) + causal) v_g(h))
    with q, k, v split from qkv(x) in that order, for every backend on the same weights.

    Half the draws are grouped-query configs with 1 < n_query_groups < n_head, the only ones in which the
    map from query heads to kv groups is observable (uniform draws reach them about one time in ten); half
    (where the subject draws layer patterns) slide a window W <= 3 on a drawn per-layer pattern."""
    gpt_only(subject)
    size = data.draw(st.sampled_from(["tiny", "small"]), label="size")
    grouped = {}
    if subject.space.gqa and data.draw(st.booleans(), label="grouped queries"):
        n_head = data.draw(st.sampled_from([4, 6] if size == "small" else [4]), label="n_head")
        groups = [g for g in range(2, n_head) if n_head % g == 0]
        grouped = dict(n_head=n_head, n_query_groups=data.draw(st.sampled_from(groups), label="n_query_groups"))
    windowed = {}
    if subject.space.layer_types and data.draw(st.booleans(), label="windowed"):  # half the draws: W < T likely
        n_layer = data.draw(st.integers(1, 2), label="n_layer")
        kinds = st.sampled_from(("full_attention", "sliding_attention"))
        windowed = dict(n_layer=n_layer, sliding_window=data.draw(st.integers(1, 3), label="sliding_window"),
                        layer_types=data.draw(st.tuples(*[kinds] * n_layer), label="layer_types"))
    config, model, make, x, pos, rope = _case(data, subject, size=size, **grouped, **windowed)
    layer = data.draw(st.integers(0, config.n_layer - 1), label="layer")
    with torch.no_grad():
        expected = reference_attention(model.blocks[layer].attn, config, x, rope, layer)
        for backend in subject.space.backends:
            attn = make(config.replace(attn_backend=backend)).blocks[layer].attn
            assert_close64(attn(x, rope), expected, config, f"attention module ({backend})")


@given(data=st.data())
def test_block_matches_definition(subject, data):
    """Block(x) == x + a + mlp(norm_2(x + a)) with a = attn(norm_1 x); parallel residual: x + a + mlp(norm_2 x),
    norm_1 in place of norm_2 when shared; sandwich: a = post_attn(attn(norm_1 x)), x + a +
    post_mlp(mlp(norm_2(x + a))); post: the same without norm_1, norm_2."""
    gpt_only(subject)
    config, model, _, x, pos, rope = _case(data, subject)
    block = model.blocks[data.draw(st.integers(0, config.n_layer - 1), label="layer")]
    pre = config.norm_placement != "post"
    post = config.norm_placement != "pre"

    def norm(name, present):
        if not present:
            return lambda t: t
        return getattr(block, name)
    with torch.no_grad():
        a = norm("post_attn_norm", post)(block.attn(norm("norm_1", pre)(x), rope))
        if not config.parallel_residual:
            expected = x + a + norm("post_mlp_norm", post)(block.mlp(norm("norm_2", pre)(x + a)))
        else:
            mlp_in = block.norm_1(x) if config.shared_attention_norm else block.norm_2(x)
            expected = x + a + block.mlp(mlp_in)
        assert_close64(block(x, rope), expected, config, "block output")


@given(data=st.data())
def test_model_matches_composition(subject, data):
    """GPT(idx, input_pos=s) == (norm_f(blocks(wte[idx] + wpe[s..s+T-1])) @ head^T)[..., :vocab_size], rotary
    tables of rope_n_elem features at positions s..s+T-1, head = wte when the embeddings are tied."""
    gpt_only(subject)
    config = draw_config(data, subject)
    model, _ = _build(data, subject, config)
    idx = data.draw(token_batches(config), label="idx")
    T = idx.size(1)
    start = data.draw(st.integers(0, config.block_size - T), label="first position")
    pos = torch.arange(start, start + T)
    assert (model.lm_head.weight is model.wte.weight) == config.tie_embeddings, "head tying differs from config"
    with torch.no_grad():
        x = model.wte.weight[idx]
        if config.scale_embeddings:
            x = x * math.sqrt(config.n_embd)
        rope = None
        if config.position_embedding == "learned":
            x = x + model.wpe.weight[pos]
        else:
            rope = rope_cache(pos, config.rope_n_elem, config.rope_base, torch.float64, config.rope_scaling)
        for block in model.blocks:
            x = block(x, rope)
        expected = (model.norm_f(x) @ model.lm_head.weight.T)[..., : config.vocab_size]
        if config.final_logit_softcap is not None:
            expected = config.final_logit_softcap * torch.tanh(expected / config.final_logit_softcap)
        actual = model(idx) if start == 0 else model(idx, input_pos=start)
        assert_close64(actual, expected, config, f"model logits at positions {start}..{start + T - 1}")
