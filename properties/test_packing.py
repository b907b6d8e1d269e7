"""Issue 14, property 4: packed sequences. Several sequences packed back to back into one row, with segment
ids, behave exactly like the sequences run separately (the naive-packing bug of MeetKai/functionary#265:
tokens attending across the boundary, loss 37.55 instead of 44.14)."""
import pytest
import torch
from hypothesis import given, strategies as st
from torch.nn import functional as F

from properties.harness import assert_close_subject, build, draw_config
from strategies import packed_rows, seeds


def _token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_t CE(logits_t, targets_t) over targets != -100."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


@pytest.mark.needs("packing")
@given(data=st.data())
def test_packed_segments_equal_separate_sequences(subject, data):
    """For a row pack(a_1, ..., a_k) with segment ids: f(pack, seg)[span(a_i)] == f(a_i) for every segment i
    (attention within the segment, positions restarting at 0); and the packed token-summed loss with the
    label that would cross a boundary ignored equals the sum of the separate losses:
    sum_t CE(f(pack)_t, y_t) [y_t = -100 at each segment's last token] == sum_i sum_t CE(f(a_i)_t, a_i[t+1]).
    float64, summation-order bound (the loss sums at most block_size terms of size O(ln V))."""
    config = draw_config(data, subject)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    packed = data.draw(packed_rows(config), label="packed rows")
    idx = packed.idx
    with torch.no_grad():
        out = subject.logits_packed(model, idx, packed.segment_ids)
        targets = torch.full_like(idx, -100)
        separate = torch.zeros((), dtype=out.dtype)
        for b, spans in enumerate(packed.spans):
            for start, n in spans:
                seq = idx[b : b + 1, start : start + n]
                alone = subject.logits(model, seq)
                assert_close_subject(subject, out[b, start : start + n], alone[0], config,
                                     f"row {b}: segment at {start} of length {n} vs alone")
                targets[b, start : start + n - 1] = seq[0, 1:]  # the boundary-crossing label stays ignored
                separate = separate + _token_loss_sum(alone[0, :-1], seq[0, 1:])
        packed_loss = _token_loss_sum(out, targets)
    assert_close_subject(subject, packed_loss[None], separate[None], config,
                         "packed token-summed loss vs the sum of separate losses")
