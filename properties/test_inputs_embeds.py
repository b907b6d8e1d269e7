"""Property: the embedding entry point is the token entry point minus the lookup. Feeding the model the
embeddings of the tokens, ``logits_from_embeds(embed(x))``, gives the logits of ``logits(x)``: positions,
dropout and everything after the lookup are applied the same way on both paths."""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, draw_case


@pytest.mark.needs("inputs_embeds")
@given(data=st.data())
def test_logits_from_embeddings_equal_logits_from_ids(subject, data):
    """logits_from_embeds(embed(x)) == logits(x) for every config and token batch."""
    config, model, idx = draw_case(data, subject)
    with torch.no_grad():
        from_ids = subject.logits(model, idx)
        from_embeds = subject.logits_from_embeds(model, subject.embed(model, idx))
    assert_close_subject(subject, from_embeds, from_ids, config,
                         "logits from the token embeddings vs from the token ids")
