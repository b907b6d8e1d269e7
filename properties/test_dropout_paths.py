"""Property 15.7: dropout is active on every forward path in train mode and on none in eval.

For each path f the subject has (plain logits; positioned logits(input_pos=s); cached decode; forward from
inputs_embeds) and a config where one dropout group alone is non-zero: in train mode f(x) varies between
calls, in eval mode f(x) == f(x) bitwise. One group at a time, so a path that skips, say, the embedding
dropout cannot hide behind the residual dropout. With >= 2 rows of >= 2 tokens there are >= 6 dropout
sites of probability p in {0.3, 0.5} (attention-only dropout: B T (T + 1) / 2 >= 6 weights), so one mask
recurs with probability <= 0.7^6 < 0.12 and 13 identical train-mode calls happen with probability
< 0.12^12 < 1e-11 for a path whose dropout is live.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from properties.harness import build, draw_config
from strategies import seeds, token_batches

REPEATS = 12


def _paths(subject, model, idx, config):
    """name -> call, in an order where the cached path (which leaves a cache behind) comes after the
    positioned one (which must run without a cache)."""
    paths = {"plain": lambda: subject.logits(model, idx)}
    caps = subject.capabilities
    if "positions" in caps:
        start = config.block_size - idx.size(1)  # the last positions: a shifted chunk
        paths[f"positioned (input_pos={start})"] = lambda: subject.logits(model, idx, input_pos=start)
    if "kv_cache" in caps:
        def cached():
            subject.reset_cache(model, idx.size(0), idx.size(1))
            return subject.decode(model, idx, 0)
        paths["cached"] = cached
    if "inputs_embeds" in caps:
        paths["inputs_embeds"] = lambda: subject.logits_from_embeds(model, subject.embed(model, idx))
    return paths


@pytest.mark.needs("dropout")
@settings(max_examples=max(2, settings.default.max_examples // 2))  # up to 4 paths x 13 forwards an example
@given(data=st.data())
def test_dropout_is_live_on_every_path_in_train_and_off_in_eval(subject, data):
    """train: exists i <= 12 with f(x) != f(x)_i for every path f; eval: f(x) == f(x) bitwise for every path."""
    config = draw_config(data, subject, dropout=True)
    groups = subject.space.dropout_groups
    group = data.draw(st.sampled_from(groups), label="live dropout group")
    config = config.replace(**{name: 0.0 for g in groups for name in g if g != group})
    model = build(subject, config, data.draw(seeds(), label="seed"))
    idx = data.draw(token_batches(config, min_batch=2, max_batch=3, min_len=2), label="idx")
    with torch.no_grad():
        for name, f in _paths(subject, model, idx, config).items():
            model.eval()
            assert torch.equal(f(), f()), f"eval mode: path {name} is not deterministic (dropout {group} live)"
            model.train()
            first = f()
            assert any(not torch.equal(first, f()) for _ in range(REPEATS)), (
                f"train mode: path {name} gives identical outputs {REPEATS + 1} times: {group} dropout is inactive")
