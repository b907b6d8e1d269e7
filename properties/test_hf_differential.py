"""Differential properties against Hugging Face transformers, and the weight conversion (gpt.convert_hf).

For configs drawn from each family's space (GPT-2, GPT-NeoX, Llama: the spaces of the hf-* subjects), our
GPT with converted weights gives the logits of the transformers model, in float64 to the summation-order
bound and in float32 within a derived bound, on a full forward and decoding in chunks through each side's
own KV cache; converting weights there and back is exact; a ``save_pretrained`` directory loads with
``load_hf_checkpoint``; and a config a family cannot express is refused with a ValueError.

These check this project's conversion code, so they run on gpt subjects only (like test_gpt_*), whatever
the --subject; they need the ``reference`` extra (transformers) and skip without it.
"""
import math
import tempfile

import pytest
import torch
from hypothesis import given, strategies as st

pytest.importorskip("transformers")

from gpt import GPT, Config  # noqa: E402
from gpt.convert_hf import (  # noqa: E402
    FAMILIES, check_expressible, config_from_hf, config_to_hf_dict, from_hf, hf_float64, load_hf_checkpoint, to_hf,
)
from gpt.hf_llama_families import window_pattern  # noqa: E402
from properties.harness import assert_close64, decode_in_chunks, gpt_only  # noqa: E402
from properties.hf_subjects import BY_FAMILY  # noqa: E402
from properties.subject import GPTSubject  # noqa: E402
from strategies import ConfigSpace, configs, decode_plans, seeds, token_batches  # noqa: E402

pytestmark = pytest.mark.gpt_internal

HF = {family: cls() for family, cls in BY_FAMILY.items()}
OURS = GPTSubject()
U32 = torch.finfo(torch.float32).eps


def _draw(data, dtype=torch.float64, **fixed):
    """(family, config, our model, the converted HF model, idx). Norm weights are drawn too (1 + N(0, 0.3^2)):
    at init they are all ones, which hides where a norm's weight is applied (QK-norm before or after RoPE,
    Gemma's 1 + weight)."""
    family = data.draw(st.sampled_from(FAMILIES), label="family")
    config = data.draw(configs(HF[family].space, **fixed), label="config")
    torch.manual_seed(data.draw(seeds(), label="seed"))
    ours = GPT(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(0.3 * torch.randn_like(p))
    idx = data.draw(token_batches(config), label="idx")
    return family, config, ours, to_hf(ours, family), idx


def _canonical(config: Config) -> Config:
    """The config with fields that cannot change the model normalised: attn_bias when bias is on (the qkv
    projection is biased either way), gelu_approximate for the SwiGLU MLP (no GELU in it), and the window
    fields to the canonical form of each layer's window (gpt.hf_llama_families.window_pattern)."""
    gelu = "none" if config.mlp_class_name == "LLaMAMLP" else config.gelu_approximate
    window, types = window_pattern(config)
    return config.replace(attn_bias=config.attn_bias and not config.bias, gelu_approximate=gelu,
                          sliding_window=window, layer_types=types)


@given(data=st.data())
def test_converted_weights_give_transformers_logits_float64(subject, data):
    """float64: GPT(x) == HF(x) and cached decoding in any chunks agrees on both sides, up to summation order.

    transformers runs under hf_float64 (its float32 casts served in float64; see gpt.convert_hf)."""
    gpt_only(subject)
    family, config, ours, hf, idx = _draw(data)
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    with torch.no_grad():
        expected = ours(idx)
        with hf_float64(hf):
            got = hf(idx, use_cache=False).logits
        assert_close64(got, expected, config, f"{family} transformers logits vs ours")
        assert_close64(decode_in_chunks(HF[family], hf, idx, plan), expected, config, f"{family} transformers decoding {plan}")
        assert_close64(decode_in_chunks(OURS, ours, idx, plan), expected, config, f"our decoding {plan}")


def float32_tol(config: Config, ref: torch.Tensor) -> float:
    """Bound for two float32 implementations of the same function.

    Summation order: as ``harness.float64_tol`` with the float32 unit, 4 L n u32 (1 + max|logit|). RoPE: the
    two sides compute the angles p * theta_i in float32 by different formulas (ours base^(-2i/n), HF's
    1 / base^(2i/n)); each angle is off by at most P (ln base + 3) u32 for positions < P (the derivation
    in test_gpt_rope_precision), a relative perturbation of q and k of that size in each of the L layers:
    4 L P (ln base + 3) u32 (1 + max|logit|) covers both sides. A conversion bug moves logits by O(0.01)
    and more at these sizes, far above this.
    """
    n = max(config.n_embd, config.intermediate_size, config.block_size, config.n_head * config.head_size)
    rope = config.block_size * (math.log(config.rope_base) + 3) if config.position_embedding == "rope" else 0.0
    return 4 * config.n_layer * (n + rope) * U32 * (1.0 + ref.abs().max().item())


@given(data=st.data())
def test_converted_weights_give_transformers_logits_float32(subject, data):
    """float32: |HF(x) - GPT(x)| <= float32_tol, full forward and cached decoding, HF's numerics as they are.

    Without RoPE scaling: float32_tol bounds the default frequencies' float32 error only (HF computes scaled
    ones in float32 too, with more operations); the float64 property covers every scaling."""
    gpt_only(subject)
    family, config, ours, hf, idx = _draw(data, torch.float32, rope_scaling=None)
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    with torch.no_grad():
        expected = ours(idx)
        tol = float32_tol(config, expected)
        decoded = decode_in_chunks(HF[family], hf, idx, plan)
        for what, got in (("logits", hf(idx, use_cache=False).logits), ("decoding", decoded)):
            err = (got - expected).abs().max().item()
            assert err <= tol, f"{family} float32 {what}: max |difference| {err:.3e} exceeds {tol:.3e}"


@given(data=st.data())
def test_weight_round_trips_are_exact(subject, data):
    """from_hf(to_hf(gpt)) has gpt's weights bitwise (padded vocabulary rows zero) and its config;
    to_hf(from_hf(hf)) has hf's state dict bitwise, for an HF model with HF's own random init."""
    gpt_only(subject)
    family = data.draw(st.sampled_from(FAMILIES), label="family")
    config = data.draw(configs(HF[family].space), label="config")
    seed = data.draw(seeds(), label="seed")
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16]), label="dtype")
    torch.manual_seed(seed)
    ours = GPT(config).to(dtype)
    back = from_hf(to_hf(ours, family), padding_multiple=config.padding_multiple, attn_backend=config.attn_backend)
    assert back.config == _canonical(config)
    V = config.vocab_size
    for (name, a), (name_b, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert name == name_b and a.dtype == b.dtype == dtype
        if name in ("wte.weight", "lm_head.weight"):
            assert torch.equal(a[:V], b[:V]) and not b[V:].any(), f"{name} changed in the round trip"
        else:
            assert torch.equal(a, b), f"{name} changed in the round trip"

    hf = HF[family].build(config, seed, dtype)
    again = to_hf(from_hf(hf), family).state_dict()
    for name, t in hf.state_dict().items():
        assert torch.equal(again[name], t) and again[name].dtype == t.dtype, f"{name} changed in the round trip"


@given(data=st.data())
def test_load_hf_checkpoint_from_save_pretrained(subject, data):
    """load_hf_checkpoint(dir) of hf.save_pretrained(dir) gives hf's logits (float64, summation order)."""
    gpt_only(subject)
    family = data.draw(st.sampled_from(FAMILIES), label="family")
    config = data.draw(configs(HF[family].space), label="config")
    hf = HF[family].build(config, data.draw(seeds(), label="seed"), torch.float64).eval()
    idx = data.draw(token_batches(config), label="idx")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_hf_checkpoint(tmp, padding_multiple=config.padding_multiple)
    assert ours.lm_head.weight.dtype == torch.float64
    with torch.no_grad():
        assert_close64(ours(idx), HF[family].logits(hf, idx), config, f"{family} checkpoint logits")


@given(data=st.data())
def test_configs_convert_or_are_refused(subject, data):
    """For any valid config and family: config_to_hf_dict raises ValueError, or config_from_hf of its output
    is the config again (fields HF has no notion of passed back in). A family's own space always converts."""
    gpt_only(subject)
    family = data.draw(st.sampled_from(FAMILIES), label="family")
    own = data.draw(st.booleans(), label="from the family's space")
    config = data.draw(configs(HF[family].space if own else ConfigSpace()), label="config")
    try:
        d = config_to_hf_dict(config, family)
    except ValueError as e:
        assert not own, f"a config from the {family} space was refused: {e}"
        with pytest.raises(ValueError):
            check_expressible(config, family)
        return
    back = config_from_hf(d, padding_multiple=config.padding_multiple, attn_backend=config.attn_backend)
    assert back == _canonical(config)
