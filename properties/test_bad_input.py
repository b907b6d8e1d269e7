"""Property 14: bad input fails loudly. Every invalid config raises ValueError/TypeError naming the
broken field, and every bad index tensor (ids out of range, longer than block_size, non-integer dtype)
raises an error naming the problem, never returning silently wrong logits."""
import pytest
import torch
from hypothesis import given, strategies as st

from gpt.config import Config
from properties.harness import draw_case
from strategies import invalid_configs


@pytest.mark.gpt_internal
@given(case=invalid_configs())
def test_invalid_config_names_the_field(case):
    """Config(**kwargs) with one broken constraint raises ValueError or TypeError whose message names it."""
    kwargs, field = case
    with pytest.raises((ValueError, TypeError), match=field):
        Config(**kwargs)


@pytest.mark.needs("input_validation")
@given(data=st.data())
def test_bad_token_tensors_are_refused(subject, data):
    """ids >= vocab_size or < 0 name vocab_size; T > block_size names block_size; float ids name the dtype."""
    config, model, idx = draw_case(data, subject)
    kind = data.draw(st.sampled_from(["too large", "negative", "too long", "float"]), label="bad input")
    bad, pattern = idx.clone(), "vocab_size"
    row, col = data.draw(st.integers(0, idx.size(0) - 1)), data.draw(st.integers(0, idx.size(1) - 1))
    if kind == "too large":
        bad[row, col] = config.vocab_size + data.draw(st.integers(0, 100), label="excess")
    elif kind == "negative":
        bad[row, col] = -data.draw(st.integers(1, 100), label="minus")
    elif kind == "too long":
        bad, pattern = torch.randint(0, config.vocab_size, (idx.size(0), config.block_size + 1)), "block_size"
    else:
        bad, pattern = idx.float(), "dtype"
    with pytest.raises((ValueError, TypeError), match=pattern):
        subject.logits(model, bad)
