"""Property 15.6: derived config fields equal their closed forms, for every draw and every preset.

padded_vocab_size = m * ceil(V / m) (the smallest multiple of m = padding_multiple that is >= V);
head_size = n_embd // n_head; n_query_groups = n_head; intermediate_size = 4 n_embd (each unless given);
rope_n_elem = floor(rotary_percentage * head_size) with RoPE, 0 with learned positions; and
replace(field=v) re-derives every derived field that was not given explicitly.
"""
import math

import pytest
from hypothesis import given, strategies as st

from gpt.config import PRESETS, Config

pytestmark = pytest.mark.gpt_internal


def _check_closed_forms(c: Config, given_fields: dict) -> None:
    m = c.padding_multiple
    if "padded_vocab_size" not in given_fields:
        assert c.padded_vocab_size % m == 0 and c.vocab_size <= c.padded_vocab_size < c.vocab_size + m, (
            f"padded_vocab_size {c.padded_vocab_size} is not the smallest multiple of {m} >= {c.vocab_size}")
        assert c.padded_vocab_size == m * math.ceil(c.vocab_size / m)
    if "head_size" not in given_fields:
        assert c.head_size == c.n_embd // c.n_head and c.n_head * c.head_size == c.n_embd
    if "n_query_groups" not in given_fields:
        assert c.n_query_groups == c.n_head
    if "intermediate_size" not in given_fields:
        assert c.intermediate_size == 4 * c.n_embd
    expected_rope = int(c.rotary_percentage * c.head_size) if c.position_embedding == "rope" else 0
    assert c.rope_n_elem == expected_rope, f"rope_n_elem {c.rope_n_elem} != floor({c.rotary_percentage} x {c.head_size})"
    for name, value in given_fields.items():
        assert getattr(c, name) == value, f"given {name}={value} was overwritten with {getattr(c, name)}"


@st.composite
def raw_configs(draw):
    n_head = draw(st.integers(1, 8), label="n_head")
    head = draw(st.integers(1, 16), label="n_embd / n_head")
    kw = dict(vocab_size=draw(st.integers(1, 70000), label="vocab_size"),
              padding_multiple=draw(st.sampled_from([1, 2, 7, 8, 64, 128, 256]), label="padding_multiple"),
              n_head=n_head, n_embd=n_head * head, n_layer=1, block_size=8)
    if draw(st.booleans(), label="rope"):
        kw.update(position_embedding="rope",
                  rotary_percentage=draw(st.sampled_from([1.0, 0.5, 0.25, 0.75]), label="rotary_percentage"))
        if int(kw["rotary_percentage"] * head) < 2:
            kw["rotary_percentage"] = 1.0
            kw["n_embd"] = n_head * max(head, 2)
    given_fields = {}
    if draw(st.booleans(), label="explicit intermediate_size"):
        given_fields["intermediate_size"] = draw(st.integers(1, 512), label="intermediate_size")
    if draw(st.booleans(), label="explicit n_query_groups"):
        given_fields["n_query_groups"] = draw(st.sampled_from([g for g in range(1, n_head + 1) if n_head % g == 0]))
    return kw, given_fields


@given(case=raw_configs(), new_vocab=st.integers(1, 70000), new_head=st.integers(1, 16))
def test_derived_fields_equal_closed_forms(case, new_vocab, new_head):
    """closed forms hold for Config(**kw) and for replace(vocab_size=..., n_embd=...) of it."""
    kw, given_fields = case
    c = Config(**kw, **given_fields)
    _check_closed_forms(c, given_fields)
    min_head = math.ceil(2 / c.rotary_percentage) if c.position_embedding == "rope" else 1  # >= 2 rotated features
    changed = c.replace(vocab_size=new_vocab, n_embd=c.n_head * max(new_head, min_head))
    _check_closed_forms(changed, given_fields)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_derive_their_closed_forms(name):
    """every preset: the closed forms above, with the preset's explicit fields kept as given."""
    c = Config.from_name(name)
    explicit = {k: v for k, v in PRESETS[name].items() if k in ("padded_vocab_size", "head_size", "n_query_groups",
                                                               "intermediate_size")}
    _check_closed_forms(c, explicit)
