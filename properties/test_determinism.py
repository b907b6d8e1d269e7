"""Property 5: eval determinism and dropout semantics.

In eval mode two forwards are bitwise identical, whatever the dropout probabilities. In train mode with
dropout > 0 two forwards differ, and are bitwise identical again under the same torch seed. With every
dropout probability 0, train mode equals eval mode.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import build, draw_config
from strategies import seeds, token_batches


@pytest.mark.needs("dropout")
@given(data=st.data())
def test_eval_is_deterministic_and_dropout_is_seeded(subject, data):
    """eval: f(x) == f(x) bitwise; train, p > 0: f(x) != f(x), but seed(s); f(x) == seed(s); f(x)."""
    config = draw_config(data, subject, dropout=True)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    # >= 2 rows of >= 2 tokens: enough dropout sites that two masks coincide with negligible probability
    idx = data.draw(token_batches(config, min_batch=2, max_batch=4, min_len=2), label="idx")
    with torch.no_grad():
        assert torch.equal(subject.logits(model, idx), subject.logits(model, idx)), "eval forwards differ"
        model.train()
        # A model whose only dropout is on attention weights (Llama) may have just B * T (T + 1) / 2 = 6 dropout
        # sites; a given mask recurs with probability <= 0.7^6 < 0.12, so up to 12 further forwards are
        # drawn: all equal to the first with probability < 0.12^12 < 1e-11 unless dropout is inactive.
        a = subject.logits(model, idx)
        assert any(not torch.equal(a, subject.logits(model, idx)) for _ in range(12)), (
            "train-mode forwards with dropout > 0 are identical: dropout is inactive")
        s = data.draw(seeds(), label="dropout seed")
        torch.manual_seed(s)
        a = subject.logits(model, idx)
        torch.manual_seed(s)
        b = subject.logits(model, idx)
        assert torch.equal(a, b), "train-mode forwards under the same seed differ"


@given(data=st.data())
def test_train_equals_eval_without_dropout(subject, data):
    """With all dropout probabilities 0, train mode and eval mode give bitwise identical logits."""
    config = draw_config(data, subject)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    idx = data.draw(token_batches(config), label="idx")
    with torch.no_grad():
        evaluated = subject.logits(model, idx)
        trained = subject.logits(model.train(), idx)
    assert torch.equal(trained, evaluated), "train mode without dropout differs from eval mode"
