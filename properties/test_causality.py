"""Property 2: causality under future-token perturbation.

Changing the tokens after position t never changes the logits at positions <= t. Checked in float64 for
every attention backend the subject offers, on the full forward and through the KV cache.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, draw_case
from strategies import perturbations


@given(data=st.data())
def test_future_tokens_do_not_change_past_logits(subject, data):
    """logits(x)[:, :t+1] == logits(x')[:, :t+1] whenever x and x' agree up to position t."""
    config, model, idx = draw_case(data, subject, min_len=2)
    t, perturbed = data.draw(perturbations(idx, config.vocab_size), label="perturbation")
    with torch.no_grad():
        a, b = subject.logits(model, idx), subject.logits(model, perturbed)
    assert_close_subject(subject, b[:, : t + 1], a[:, : t + 1], config,
                         f"logits at positions <= {t} after changing later tokens")


@pytest.mark.needs("kv_cache")
@given(data=st.data())
def test_future_tokens_do_not_change_cached_logits(subject, data):
    """Decoded through the KV cache in two chunks split after t, the first chunk's logits and the
    cache it leaves behind ignore the perturbed continuation: decoding x'[t+1:] after x[:t+1] equals
    the full forward of x'."""
    config, model, idx = draw_case(data, subject, min_len=2)
    t, perturbed = data.draw(perturbations(idx, config.vocab_size), label="perturbation")
    B, T = idx.shape
    with torch.no_grad():
        subject.reset_cache(model, B, T)
        head = subject.decode(model, idx[:, : t + 1], 0)
        tail = subject.decode(model, perturbed[:, t + 1 :], t + 1)
        full = subject.logits(model, perturbed)
    assert_close_subject(subject, head, full[:, : t + 1], config, "cached prefix logits")
    assert_close_subject(subject, tail, full[:, t + 1 :], config, "cached continuation logits after perturbation")
