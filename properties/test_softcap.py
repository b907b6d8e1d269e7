"""Final-logit soft-capping (Gemma 2): the capped model's logits are c * tanh(z / c) of the uncapped model's
logits z on the same weights (soft-capping has no parameters), hence |logits| <= c (tanh rounds to exactly 1
in float64 for |z| / c > 19, so the bound is <= and not <). Float64 through the subject's comparison bound:
tanh is 1-Lipschitz and c tanh(z / c) moves an error in z by at most that error.

The attention-logit cap is checked where its scores are observable, in test_gpt_attention_variants.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, build, draw_config
from strategies import seeds, token_batches
from strategies.configs import SOFTCAPS


@pytest.mark.needs("softcap")
@given(data=st.data())
def test_final_logit_softcap_closed_form_and_bound(subject, data):
    """logits_c(x) == c tanh(logits_none(x) / c) and max |logits_c(x)| <= c, same seed and weights."""
    cap = data.draw(st.sampled_from(SOFTCAPS + (1e-3,)), label="final_logit_softcap")
    config = draw_config(data, subject, final_logit_softcap=cap)
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config), label="idx")
    with torch.no_grad():
        capped = subject.logits(build(subject, config, seed), idx)
        plain = subject.logits(build(subject, config.replace(final_logit_softcap=None), seed), idx)
    assert capped.abs().max().item() <= cap, f"|logits| reaches {capped.abs().max().item()} > cap {cap}"
    assert_close_subject(subject, capped, cap * torch.tanh(plain / cap), config, f"logits capped at {cap}")
