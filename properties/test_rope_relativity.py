"""Property 11: RoPE relativity. With rotary positions and no learned absolute positions, attention
depends on position differences only: shifting every position by a constant leaves the logits unchanged."""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, current_test, draw_case


@pytest.mark.needs("positions")
@given(data=st.data())
def test_shifting_all_positions_leaves_logits_unchanged(subject, data):
    """logits(x, positions 0..T-1) == logits(x, positions s..s+T-1) for every shift s."""
    if "rope" not in subject.space.positions:
        pytest.skip(f"{current_test()}: subject {subject.name} has no rotary positions")
    config, model, idx = draw_case(data, subject, position_embedding="rope")
    idx = idx[:, : config.block_size - 1]
    shift = data.draw(st.integers(1, config.block_size - idx.size(1)), label="shift")
    with torch.no_grad():
        assert_close_subject(subject, subject.logits(model, idx, input_pos=shift), subject.logits(model, idx),
                             config, f"logits with positions shifted by {shift}")
