"""Config-liveness: the model honours every config field it claims, even without a weight mapping.

For each field f of the subject's space that does not change parameter shapes, and a config c drawn from
the space, let c' = c with f changed to another value the space allows. With the same weights in both
models (built from the same seed; c's weights copied into c''s model), on a drawn input x:

    exists x:  max |logits_c(x) - logits_c'(x)|  >  the float64 summation-order bound

i.e. the difference cannot be rounding: the model reads the field. Fields a subject ignores must be listed
in its ``ConfigSpace(ignored=(...))`` (then they are never drawn and are exempt here); a silently ignored
field (a norm with a hard-coded eps, RoPE with a fixed base, GELU always exact) fails this property. A bare
``make(config)`` with no declared space skips, saying so: it claimed no field (a nanoGPT-style model rightly
ignores ``norm_class_name``).

Weights: matrices x20 and vectors perturbed by N(0, 0.5^2), so pre-activations are O(1) (at init GELU's
tanh approximation differs from the exact one by ~5e-4 x^4, x ~ 0.1) and the attention is not uniform.

When two values legitimately give identical logits, the drawn input or alternative avoids it:
- ``rope_base`` and ``rotary_percentage`` need T >= 2 (at T = 1 only position 0 exists and RoPE is the
  identity) and two different tokens in a row (a row repeating one token has equal values at every key:
  attention returns that value whatever the scores, and every position's stream stays equal), so x has at
  least 2 tokens and its first row's first two differ; ``rope_base`` needs rope_n_elem >= 4 (with one rotated pair the
  only frequency is base^0 = 1, whatever the base); a changed ``rotary_percentage`` changes the number of
  rotated pairs (n // 2), since n = 2 and n = 3 rotate the same single pair at frequency 1; and both need
  some layer where a query sees a key at another position (a sliding window W = 1 on every layer leaves
  each query alone with its own key: relative position 0, RoPE the identity);
- ``gelu_approximate`` only where the MLP (or the MoE's experts) has a GELU (GptNeoxMLP, GemmaMLP);
  ``parallel_residual`` only without ``shared_attention_norm`` (which requires it) and with pre-norm
  placement (sandwich and post blocks are sequential); ``norm_class_name`` only without biases and
  ``mlp_class_name`` / ``moe_expert_mlp`` only between the gated MLPs (otherwise the parameter shapes differ);
- ``sliding_window`` W -> W' (None = no window = W of infinity) only where some layer is windowed (W is
  unused when layer_types makes every layer "full_attention") and T > min(W, W'): query i sees keys
  i - W < j <= i, so the two windows differ only for a query i >= min(W, W'), whose larger window adds
  key i - min(W, W'); and only with two different tokens there, which the drawn input guarantees at its
  first row's positions 0 and 1 (query min(W, W') then gains key 0, whose value differs from key 1's at
  every layer). W' = None only where layer_types names no sliding layer (a sliding layer needs a W);
- ``layer_types``: one layer's type flipped, only with a window and T > W (a window no query of the input
  can reach past makes both types the same attention);
- ``attn_logit_softcap`` c -> c' (another drawn cap, or None) only where some layer lets a query see two
  keys (a window of 1 everywhere leaves weight 1 on the query's own key, whatever its score); c tanh(s / c)
  is not a shift of s, so it changes the weights of two keys with different scores;
- ``final_logit_softcap`` c -> c' (another cap, or None): c tanh(z / c) differs for every z != 0;
- MoE ``n_experts_per_token`` k -> k' (1 <= k' <= n_experts): the mixture gains or loses an expert of
  positive weight; ``moe_routing`` only between ``softmax_topk`` and the renormalising conventions
  (``softmax_topk_renorm`` and ``topk_softmax`` are one function: see gpt.moe), only with k < n_experts
  (with every expert kept the renormalisation divides by sum p = 1), and only with pre-norm placement or
  a shared expert: renormalising scales the routed output by 1 / sum_{top-k} p, and without a shared
  expert a sandwich/post norm right after the MLP removes that scale (up to its eps).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from properties.harness import draw_config, float64_tol
from strategies import seeds, token_batches
from strategies.configs import SOFTCAPS

ROPE_BASES = (10000.0, 100.0, 500000.0)  # strategies.configs draws from these
GELU_MLPS = ("GptNeoxMLP", "GemmaMLP")


def _alternatives(config, space, T: int) -> dict:
    """field -> other values the space allows that keep parameter shapes and, on an input of T tokens, the
    logits (possibly empty)."""
    c, alt = config, {}
    alt["norm_eps"] = [e for e in space.norm_eps if e != c.norm_eps]
    windows = [c.window(i) for i in range(c.n_layer)]
    several_keys = any(w is None or w >= 2 for w in windows)  # some query sees another position's key
    if c.position_embedding == "rope" and several_keys:
        if c.rope_n_elem >= 4:
            alt["rope_base"] = [b for b in ROPE_BASES if b != c.rope_base]
        if space.partial_rotary:
            counts = [n for n in range(2, c.head_size + 1) if (space.odd_rotary or n % 2 == 0)
                      and n // 2 != c.rope_n_elem // 2]
            alt["rotary_percentage"] = [1.0 if n == c.head_size else (n + 0.5) / c.head_size for n in counts]
    moe = c.mlp_class_name == "MoE"
    if c.mlp_class_name in GELU_MLPS or (moe and c.moe_expert_mlp in GELU_MLPS):
        alt["gelu_approximate"] = [g for g in space.gelu_approximations if g != c.gelu_approximate]
    if not c.shared_attention_norm and c.norm_placement == "pre":  # sandwich/post blocks are sequential
        alt["parallel_residual"] = [p for p in space.parallel_residual if p != c.parallel_residual]
    alt["scale_embeddings"] = [v for v in space.scale_embeddings if v != c.scale_embeddings]
    if not c.bias:
        alt["norm_class_name"] = [n for n in space.norms if n != c.norm_class_name]
    if c.mlp_class_name != "GptNeoxMLP":
        alt["mlp_class_name"] = [m for m in space.mlps if m not in ("GptNeoxMLP", c.mlp_class_name)]
    alt.update(_attention_alternatives(c, space, T, windows, several_keys))
    if moe:
        k, E = c.n_experts_per_token, c.n_experts
        alt["n_experts_per_token"] = [j for j in range(1, E + 1) if j != k]
        if k < E and (c.norm_placement == "pre" or c.n_shared_experts):
            renorm = c.moe_routing != "softmax_topk"
            alt["moe_routing"] = [r for r in space.moe_routings if (r != "softmax_topk") != renorm]
        if c.moe_expert_mlp != "GptNeoxMLP":
            alt["moe_expert_mlp"] = [m for m in space.moe_expert_mlps if m not in ("GptNeoxMLP", c.moe_expert_mlp)]
    return {f: v for f, v in alt.items() if v and f not in space.ignored}


def _attention_alternatives(c, space, T: int, windows: list, several_keys: bool) -> dict:
    """Windows, per-layer types and soft-caps: the values that change which keys a query of T tokens sees
    or how it weighs them (conditions in the module docstring)."""
    alt = {}
    inf = float("inf")
    if space.sliding_window and (c.layer_types is None or "sliding_attention" in c.layer_types):
        lo = space.min_sliding_window
        W = inf if c.sliding_window is None else c.sliding_window
        needs_w = c.layer_types is not None  # here with a sliding layer: None is not a valid W
        alt["sliding_window"] = [w for w in [None, *range(lo, max(lo, c.block_size - 1) + 1)]
                                 if w != c.sliding_window and min(W, inf if w is None else w) < T
                                 and not (w is None and needs_w)]
    if space.layer_types and c.sliding_window is not None and T > c.sliding_window:
        types = list(c.layer_types or ["sliding_attention"] * c.n_layer)
        flip = {"sliding_attention": "full_attention", "full_attention": "sliding_attention"}
        alt["layer_types"] = [tuple(types[:i] + [flip[types[i]]] + types[i + 1:]) for i in range(c.n_layer)]
    caps = (None,) + SOFTCAPS
    if space.attn_logit_softcap and several_keys:
        alt["attn_logit_softcap"] = [x for x in caps if x != c.attn_logit_softcap]
    if space.final_logit_softcap:
        alt["final_logit_softcap"] = [x for x in caps if x != c.final_logit_softcap]
    return alt


def _perturb(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(20.0)
            else:
                p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@given(data=st.data())
def test_every_shape_preserving_field_changes_the_logits(subject, data):
    """For every field f of the space that keeps shapes: logits_c(x) != logits_{c with f changed}(x)."""
    _check_liveness(subject, data)


@given(data=st.data())
def test_moe_fields_change_the_logits(subject, data):
    """The same for configs with a mixture of experts (its fields are live only there, and a config drawn
    from the whole space is one only in some examples)."""
    if "MoE" not in subject.space.mlps:
        pytest.skip(f"subject {subject.name} draws no mixture of experts (ConfigSpace.mlps)")
    _check_liveness(subject, data, mlp_class_name="MoE")


def _check_liveness(subject, data, **fixed) -> None:
    if not subject.declares_space:
        pytest.skip(f"subject {subject.name} is a bare make(config) without a declared space, so it never "
                    "claimed any Config field; declare make.space = ConfigSpace(...) to check config-liveness")
    config = draw_config(data, subject, **fixed)
    # LayerNorm maps every 2-vector to +-(1, -1) (times its weight, plus its bias): at n_embd = 2 two tokens'
    # attention inputs coincide half the time, and then no score transform (soft-cap, window, ...) can
    # change anything (a nightly run found attn_logit_softcap "dead" so). RMSNorm's circle has no such collapse.
    assume(config.n_embd > 2 or config.norm_class_name != "LayerNorm")
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, min_len=2), label="idx")
    if idx[0, 1] == idx[0, 0]:  # one repeated token: attention averages equal values, positions vanish
        idx[0, 1] = (idx[0, 0] + 1) % config.vocab_size
    alternatives = _alternatives(config, subject.space, idx.size(1))
    if not alternatives:
        return
    model = subject.build(config, seed, dtype=torch.float64).eval()
    _perturb(model, seed)
    weights = model.state_dict()
    with torch.no_grad():
        base = subject.logits(model, idx)
        tol = float64_tol(config, base)
        dead = []
        for field, values in alternatives.items():
            value = data.draw(st.sampled_from(values), label=field)
            other_config = config.replace(**{field: value})
            other = subject.build(other_config, seed, dtype=torch.float64).eval()
            if {k: v.shape for k, v in other.state_dict().items()} != {k: v.shape for k, v in weights.items()}:
                continue  # this implementation's parameter shapes depend on the field
            other.load_state_dict(weights)
            diff = (subject.logits(other, idx) - base).abs().max().item()
            if diff <= tol:
                dead.append(f"{field}={getattr(config, field)!r} -> {value!r} (max |difference| {diff:.2e})")
    assert not dead, (f"changing these fields leaves the logits unchanged (within {tol:.1e}): {dead}; the model "
                      "ignores them: honour them or list them in the subject's ConfigSpace(ignored=...)")
