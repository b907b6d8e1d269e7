"""Property: vocabulary padding is invisible. The padded rows of the embedding and the head never reach
the logits: overwriting them with arbitrary values leaves every logit bitwise unchanged."""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import draw_case, gpt_only

pytestmark = pytest.mark.gpt_internal


@given(data=st.data())
def test_padded_rows_never_reach_logits(subject, data):
    """logits(model) == logits(model with rows >= vocab_size of wte and lm_head set to noise), exactly."""
    gpt_only(subject)
    config, model, idx = draw_case(data, subject, padding_multiple=64)
    with torch.no_grad():
        before = model(idx)
        V = config.vocab_size
        for weight in (model.wte.weight, model.lm_head.weight):
            weight[V:] = 1e3 * torch.randn_like(weight[V:])
        after = model(idx)
    assert torch.equal(before, after), "padded vocabulary rows changed the logits"
