"""Property 1: logits are (B, T, vocab_size), in the model's dtype (or the subject's declared
``logits_dtype``), and finite; the first non-finite logit is named with its position."""
import torch
from hypothesis import given, strategies as st

from properties.conformance import first_non_finite
from properties.harness import draw_case
from strategies import float_dtypes


@given(data=st.data())
def test_logits_shape_dtype_finite(subject, data):
    """For every config, batch and dtype: logits.shape == (B, T, vocab_size), dtype == model dtype, all finite."""
    dtype = data.draw(float_dtypes(low_precision="low_precision" in subject.capabilities), label="dtype")
    config, model, idx = draw_case(data, subject, dtype=dtype)
    with torch.no_grad():
        logits = subject.logits(model, idx)
    assert logits.shape == (*idx.shape, config.vocab_size), f"logits shape {tuple(logits.shape)}"
    expected = subject.logits_dtype or dtype  # e.g. float32 logits from any model dtype, when declared
    assert logits.dtype == expected, f"logits dtype {logits.dtype}, expected {expected} (model dtype {dtype})"
    bad = first_non_finite(logits)
    assert not bad, f"non-finite logits: {bad} (batch, position, vocab)"
