"""Issue 14, properties 1 and 2: padding invariance, and finite logits where a query sees no key.

A batch of rows x_b of different lengths, each padded on its own side (left or right) with arbitrary pad ids
to one width W, is run with its attention mask m (1 real, 0 padding) and the positions cumsum(m) - 1 (the
subject's default). Padding is a batching detail: it must change no real token's logits.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, build, draw_config
from strategies import padded_batches, repadded, seeds


@pytest.mark.needs("attention_mask")
@given(data=st.data())
def test_padding_changes_no_real_token(subject, data):
    """For every row b: f(pad ⊕ x_b ⊕ pad, m)[real_b] == f(x_b), whatever the pad side and length (0 to
    beyond len(x_b)); and replacing every pad id (so every key and value at a masked position) changes no
    real logit: f(idx', m)[m = 1] == f(idx, m)[m = 1]. float64, summation-order bound."""
    config = draw_config(data, subject)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    batch = data.draw(padded_batches(config), label="padded batch")
    other = data.draw(repadded(batch, config.vocab_size), label="other pad ids")
    real = batch.mask.bool()
    with torch.no_grad():
        out = subject.logits(model, batch.idx, attention_mask=batch.mask)
        for b in range(batch.idx.size(0)):
            alone = subject.logits(model, batch.real(b))[0]
            assert_close_subject(subject, out[b, batch.real_slice(b)], alone, config,
                                 f"row {b} ({batch.lengths[b]} real tokens, {batch.sides[b]}-padded) vs alone")
        again = subject.logits(model, other, attention_mask=batch.mask)
        assert_close_subject(subject, again[real], out[real], config, "real logits after changing the pad ids")


@pytest.mark.needs("attention_mask")
@given(data=st.data())
def test_fully_masked_rows_are_finite(subject, data):
    """A row of padding only (m_b = 0) and left padding (padded queries with no real key before them) give
    finite logits everywhere, in float64, float32 and, with capability low_precision, bfloat16 and float16:
    isfinite(f(idx, m)) holds elementwise (the softmax over no key must not produce 0/0 = NaN,
    pytorch/pytorch#110213). The value at such positions is implementation-defined; gpt documents that the
    attention output of a query with no visible key is 0 (checked in test_gpt_masks)."""
    config = draw_config(data, subject)
    dtypes = [torch.float64, torch.float32]
    if "low_precision" in subject.capabilities:
        dtypes += [torch.bfloat16, torch.float16]
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    model = build(subject, config, data.draw(seeds(), label="seed"), dtype=dtype)
    batch = data.draw(padded_batches(config, min_real=0, sides=("left",)), label="padded batch")
    empty = data.draw(st.integers(0, batch.idx.size(0) - 1), label="all-padding row")
    mask = batch.mask.clone()
    mask[empty] = 0
    with torch.no_grad():
        out = subject.logits(model, batch.idx, attention_mask=mask)
    assert torch.isfinite(out).all(), (f"{dtype}: non-finite logits at padded positions "
                                       f"{(~torch.isfinite(out)).any(-1).nonzero().tolist()[:8]} with mask {mask.tolist()}")
