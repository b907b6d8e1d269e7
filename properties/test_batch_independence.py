"""Property 4: batch independence. Each row of a batched forward equals that row run alone, and
permuting the batch permutes the outputs."""
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, draw_case


@given(data=st.data())
def test_rows_are_independent_and_permutation_equivariant(subject, data):
    """forward(x)[i] == forward(x[i:i+1])[0] for every row i, and forward(x[perm]) == forward(x)[perm]."""
    config, model, idx = draw_case(data, subject, max_batch=4)
    perm = torch.tensor(data.draw(st.permutations(range(idx.size(0))), label="permutation"))
    with torch.no_grad():
        batched = subject.logits(model, idx)
        for i in range(idx.size(0)):
            assert_close_subject(subject, subject.logits(model, idx[i : i + 1])[0], batched[i], config,
                                 f"row {i} alone vs batched")
        assert_close_subject(subject, subject.logits(model, idx[perm]), batched[perm], config, "permuted batch")
