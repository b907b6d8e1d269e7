"""MoE property 7, differential against transformers' Mixtral and Qwen2-MoE (gpt.convert_moe).

For configs drawn from the hf-mixtral and hf-qwen-moe spaces, our GPT with converted weights gives the
transformers model's logits in float64 to the summation-order bound, on a full forward and decoding in
chunks through each side's own KV cache; its aux loss is transformers' ``aux_loss`` / k (transformers' f
sums to k, ours to 1); converting weights there and back is exact. transformers runs under hf_float64.
OLMoE is not here: its q/k RMSNorms have no gpt field (hf-olmoe runs the generic properties only).

These check this project's conversion code, so they run on gpt subjects only; they need transformers.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip("transformers")

from gpt import GPT  # noqa: E402
from gpt.convert_hf import hf_float64  # noqa: E402
from gpt.convert_moe import CONVERTIBLE, moe_from_hf, moe_to_hf  # noqa: E402
from properties.harness import assert_close64, decode_in_chunks, gpt_only  # noqa: E402
from properties.hf_moe_subjects import HFMixtralSubject, HFQwenMoESubject  # noqa: E402
from properties.subject import GPTSubject  # noqa: E402
from strategies import configs, decode_plans, seeds, token_batches  # noqa: E402

# building two models per example costs ~0.5 s: a fifth of the profile's examples (ci 4, nightly scales)
FEWER = settings(max_examples=max(3, settings().max_examples // 5))
HF = {"mixtral": HFMixtralSubject(), "qwen2_moe": HFQwenMoESubject()}
OURS = GPTSubject()


def _draw(data):
    family = data.draw(st.sampled_from(CONVERTIBLE), label="family")
    config = data.draw(configs(HF[family].space), label="config")
    torch.manual_seed(data.draw(seeds(), label="seed"))
    ours = GPT(config).double().eval()
    idx = data.draw(token_batches(config), label="idx")
    return family, config, ours, moe_to_hf(ours, family).eval(), idx


@FEWER
@given(data=st.data())
def test_converted_moe_gives_transformers_logits_and_aux_loss_float64(subject, data):
    """GPT(x) == HF(x), cached decoding in chunks agrees, aux == HF aux_loss / k; float64."""
    gpt_only(subject)
    family, config, ours, hf, idx = _draw(data)
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    with torch.no_grad():
        logits, aux = OURS.logits_and_aux_loss(ours, idx)
        hf_logits, hf_aux = HF[family].logits_and_aux_loss(hf, idx)
        assert_close64(logits, hf_logits, config, f"{family}: GPT vs transformers logits")
        assert_close64(aux, hf_aux, config, f"{family}: aux loss vs transformers aux_loss / k")
        with hf_float64(hf):
            ours_cached = decode_in_chunks(OURS, ours, idx, plan)
            hf_cached = decode_in_chunks(HF[family], hf, idx, plan)
        assert_close64(ours_cached, hf_cached, config, f"{family}: cached decoding in chunks {plan}")
        assert_close64(ours_cached, logits, config, f"{family}: cached vs full forward")


@FEWER
@given(data=st.data())
def test_moe_weights_round_trip_exactly(subject, data):
    """from_hf(to_hf(GPT)) has every tensor of GPT, bit for bit, and the same routing convention."""
    gpt_only(subject)
    family, config, ours, hf, _ = _draw(data)
    back = moe_from_hf(hf, padding_multiple=config.padding_multiple, attn_backend=config.attn_backend)
    V = config.vocab_size  # HF has no padded vocabulary rows: they come back as zeros, and never reach logits
    for name, t in ours.state_dict().items():
        t = t[:V] if name in ("wte.weight", "lm_head.weight") else t
        got = back.state_dict()[name]
        assert torch.equal(got[: t.size(0)], t), f"{family}: {name} changed in the round trip"
    for field in ("n_experts", "n_experts_per_token", "n_shared_experts", "shared_expert_gate",
                  "moe_intermediate_size"):
        assert getattr(back.config, field) == getattr(config, field), field
    renorm = config.moe_routing != "softmax_topk"
    assert (back.config.moe_routing != "softmax_topk") == renorm, "routing convention lost in the round trip"
