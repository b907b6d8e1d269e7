"""Property 3: prefix consistency. forward(x[:, :t]) equals forward(x)[:, :t] for every 1 <= t <= T."""
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, draw_case


@given(data=st.data())
def test_prefix_forward_equals_full_forward_prefix(subject, data):
    """The logits of a prefix do not depend on whether the rest of the sequence was in the batch."""
    config, model, idx = draw_case(data, subject)
    t = data.draw(st.integers(1, idx.size(1)), label="t")
    with torch.no_grad():
        full, prefix = subject.logits(model, idx), subject.logits(model, idx[:, :t])
    assert_close_subject(subject, prefix, full[:, :t], config, f"forward(x[:, :{t}]) vs forward(x)[:, :{t}]")
