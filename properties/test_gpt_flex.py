"""The flex backend (torch.nn.attention.flex_attention) gives the math reference's results.

- attention: attend_flex(q, k, v, mask, cap, sinks) == attend_math(...) for causal, windowed and cached (last T
  of S positions) masks, GQA, soft-capping and sinks (math is pinned to the closed forms in
  test_gpt_attention_variants), at one fixed shape so that the drawn cases reuse one trace;
- model: logits_flex(x) == logits_math(x) on the same weights, on the full forward and decoded in chunks through
  the KV cache (ring-buffer caches included), for configs drawn over every attention axis.
Float64, summation-order bound.

On CPU torch 2.13 runs flex forward only (it refuses tensors that require grad: gradient equivalence is a GPU
property) and eagerly in float64, each new shape costing a dynamo trace (~0.3 s): the model-level property
draws a twentieth of the profile's examples (ci 1, nightly 20). The compiled CPU kernel (float32 only) runs in
the nightly profile only (without sinks: compiled CPU flex returns no log-sum-exp), held to the
flash-attention rule against the float64 math reference.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gpt.attention import attend
from gpt.mask_spec import MaskSpec
from properties.harness import assert_close64, assert_low_precision, build, decode_in_chunks, draw_config, gpt_only
from strategies import decode_plans, seeds, token_batches

pytestmark = pytest.mark.gpt_internal
FEW = max(1, settings.default.max_examples // 20)  # ci 1, nightly 20
NIGHTLY = settings.default.max_examples >= 100  # the nightly profile
B, NH, NQG, T, S, HS = 2, 4, 2, 5, 7, 4  # one shape: every draw after the first reuses the trace


@settings(max_examples=max(4, settings.default.max_examples // 5))  # ci 4, nightly 80
@given(data=st.data())
def test_flex_attention_matches_math(data):
    """attend(..., 'flex') == attend(..., 'math') for drawn windows, caps and sinks. Every draw takes every
    path (W = S is global here, c = 1e4 and sinks of -40 change nothing measurable), so all draws share one
    trace; the None paths (no score_mod, no window term, no sinks) are the model-level property's."""
    window = data.draw(st.integers(1, S), label="window")
    kv = S  # the queries are the last T of S positions (cached decoding)
    spec = MaskSpec(torch.arange(kv - T, kv)[None], torch.arange(kv)[None], window)
    cap = data.draw(st.sampled_from([0.5, 3.0, 1e4]), label="softcap")
    g = torch.Generator().manual_seed(data.draw(seeds(), label="seed"))
    sinks = 2 * torch.randn(NH, generator=g, dtype=torch.float64)
    if not data.draw(st.booleans(), label="sinks"):
        sinks = torch.full((NH,), -40.0, dtype=torch.float64)
    q = 3 * torch.randn(B, NH, T, HS, generator=g, dtype=torch.float64)  # scores beyond the caps
    k = 3 * torch.randn(B, NQG, kv, HS, generator=g, dtype=torch.float64)
    v = torch.randn(B, NQG, kv, HS, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref = attend(q, k, v, spec, 0.0, "math", softcap=cap, sinks=sinks)
        out = attend(q, k, v, spec, 0.0, "flex", softcap=cap, sinks=sinks)
    tol = 4 * (kv + HS) * torch.finfo(torch.float64).eps * (1 + ref.abs().max().item())
    assert (out - ref).abs().max().item() <= tol, f"flex vs math: {(out - ref).abs().max().item():.2e} > {tol:.2e}"


@settings(max_examples=FEW)
@given(data=st.data())
def test_flex_matches_math(subject, data):
    """flex(x) == math(x), and flex decoding in chunks == math full forward, same weights, float64."""
    gpt_only(subject)
    config = draw_config(data, subject, attn_backend="math")
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, max_batch=2), label="idx")
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    with torch.no_grad():
        ref = build(subject, config, seed)(idx)
        flex = build(subject, config.replace(attn_backend="flex"), seed)
        assert_close64(flex(idx), ref, config, "flex vs math logits")
        assert_close64(decode_in_chunks(subject, flex, idx, plan), ref, config, f"flex decoding in chunks {plan}")


@pytest.mark.slow
@pytest.mark.skipif(not NIGHTLY, reason="compiles flex with inductor (tens of seconds on CPU): nightly profile only")
@settings(max_examples=FEW)
@given(data=st.data())
def test_compiled_flex_float32_within_twice_math_error(subject, data):
    """torch.compile'd flex on CPU (float32): |flex32 - math64| <= 2 |math32 - math64| + noise floor."""
    gpt_only(subject)
    from gpt.flex import _compiled_flex
    import gpt.flex as flex_module

    config = draw_config(data, subject, attn_backend="math", attention_sinks=False)  # compiled CPU: no lse
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, max_batch=2), label="idx")
    with torch.no_grad():
        ref64 = build(subject, config, seed)(idx)
        ref32 = build(subject, config, seed, dtype=torch.float32)(idx)
        model = build(subject, config.replace(attn_backend="flex"), seed, dtype=torch.float32)
        original = flex_module._flex_function
        flex_module._flex_function = lambda device_type: _compiled_flex()  # the compiled kernel, also on CPU
        try:
            out = model(idx)
        finally:
            flex_module._flex_function = original
    assert_low_precision(out, ref32, ref64, 2.0, "compiled flex float32", accumulation_scale=ref64.abs().max().item())
