"""Property 1: logits are (B, T, vocab_size), in the model's dtype, and finite."""
import torch
from hypothesis import given, strategies as st

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
    assert logits.dtype == dtype, f"logits dtype {logits.dtype}, model dtype {dtype}"
    assert torch.isfinite(logits).all(), "non-finite logits"
