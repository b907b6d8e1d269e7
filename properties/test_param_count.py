"""Property 6: the closed-form parameter count equals the sum of parameter sizes (tied weights once)."""
import pytest
from hypothesis import given, strategies as st

from properties.harness import build, draw_config


@pytest.mark.needs("param_count")
@given(data=st.data())
def test_closed_form_param_count(subject, data):
    """subject.param_count(config) == sum(p.numel() for p in model.parameters()) (shared tensors once)."""
    config = draw_config(data, subject, size=data.draw(st.sampled_from(["tiny", "small"]), label="size"))
    model = build(subject, config, seed=0)
    counted = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    assert subject.param_count(config) == counted, f"closed form {subject.param_count(config)} != {counted} built"
