"""Issue 14, property 3: per-row positions. A batch whose rows start at different positions equals each row
run alone at its positions."""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, draw_case
from strategies import ragged_starts


@pytest.mark.needs("position_ids")
@given(data=st.data())
def test_rows_at_different_positions(subject, data):
    """position_ids[b] = s_b + (0, 1, ..., T-1) with its own start s_b per row:
    f(x, position_ids)[b] == f(x_b at positions s_b..s_b+T-1) for every row b, where the row alone is run
    with input_pos = s_b (capability positions: a second, independent path to the same positions) or else
    with position_ids (1, T). float64, summation-order bound."""
    config, model, idx = draw_case(data, subject)
    B, T = idx.shape
    pos = data.draw(ragged_starts(config, B, T), label="position_ids")
    with torch.no_grad():
        out = subject.logits(model, idx, position_ids=pos)
        for b in range(B):
            start = int(pos[b, 0])
            if "positions" in subject.capabilities:
                alone = subject.logits(model, idx[b : b + 1], input_pos=start)
            else:
                alone = subject.logits(model, idx[b : b + 1], position_ids=pos[b : b + 1])
            assert_close_subject(subject, out[b], alone[0], config, f"row {b} starting at {start} vs alone")
