"""Property 9: KV-cache equivalence. Decoding a sequence as a prompt followed by chunks of any sizes
through the cache gives the logits of one full forward; resetting the cache and decoding again gives
bitwise identical results."""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, decode_in_chunks, draw_case
from strategies import decode_plans, token_batches


@pytest.mark.needs("kv_cache")
@given(data=st.data())
def test_chunked_decoding_equals_full_forward(subject, data):
    """cat(decode(chunk_i)) == forward(x), for every prompt/continuation split and chunking."""
    config, model, idx = draw_case(data, subject)
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    with torch.no_grad():
        full = subject.logits(model, idx)
        decoded = decode_in_chunks(subject, model, idx, plan)
        assert_close_subject(subject, decoded, full, config, f"decoding in chunks {plan}")
        again = decode_in_chunks(subject, model, idx, plan)
    assert torch.equal(decoded, again), "decoding again after a cache reset gives different logits"


@pytest.mark.needs("kv_cache")
@given(data=st.data())
def test_reset_cache_forgets_previous_sequence(subject, data):
    """After decoding one batch, of any batch size and length, a reset cache decodes another batch
    exactly like a fresh model would."""
    config, model, idx = draw_case(data, subject)
    other = data.draw(token_batches(config), label="previous batch")
    other_plan = data.draw(decode_plans(other.size(1)), label="previous chunks")
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    with torch.no_grad():
        decode_in_chunks(subject, model, other, other_plan)
        assert_close_subject(subject, decode_in_chunks(subject, model, idx, plan), subject.logits(model, idx),
                             config, "decoding after another sequence")
