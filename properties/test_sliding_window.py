"""Sliding-window attention (Mistral convention: query i attends keys i - W < j <= i, W keys including itself).

1. Locality: one layer passes information at most W - 1 positions forward, so L layers at most R = L (W - 1):
   for x, x' equal at positions > c, logits(x)[p] == logits(x')[p] for every p > c + R. The window is not
   smaller than declared: changing only the token at c + 1 changes the logits at c + 1 + R (the longest chain
   of in-window hops, every softmax weight of which is positive).
2. Windowed KV cache: decoding in chunks of any sizes through a cache that keeps W keys per windowed layer
   equals the full forward, including prefills longer than W (litgpt#2182) and steps across the boundary.
Both float64, through the subject's comparison bound; "changes" means a difference above that bound.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, decode_in_chunks, draw_case, draw_config, build, float64_tol
from strategies import decode_plans, seeds, token_batches

MAX_WINDOW = 4


def _windowed_config(data, subject, min_len_of_window):
    """A config whose every layer has a drawn window W, with block_size long enough for ``min_len_of_window``."""
    window = data.draw(st.integers(subject.space.min_sliding_window, MAX_WINDOW), label="sliding_window")
    n_layer = data.draw(st.integers(1, 2), label="n_layer")
    need = min_len_of_window(window, n_layer)
    block = data.draw(st.integers(need, max(need, 12)), label="block_size")
    config = draw_config(data, subject, sliding_window=window, layer_types=None, n_layer=n_layer, block_size=block)
    return config, window


@pytest.mark.needs("sliding_window")
@given(data=st.data())
def test_window_limits_the_receptive_field(subject, data):
    """x[:, c+1:] == x'[:, c+1:]  =>  logits(x)[:, p] == logits(x')[:, p] for all p > c + L (W - 1); and changing
    x[:, c+1] alone changes logits[:, c + 1 + L (W - 1)]."""
    config, W = _windowed_config(data, subject, lambda w, n: n * (w - 1) + 2)
    R = config.n_layer * (W - 1)  # receptive field: positions a token's information can travel forward
    model = build(subject, config, data.draw(seeds(), label="seed"))
    idx = data.draw(token_batches(config, min_len=R + 2), label="idx")
    T = idx.size(1)
    c = data.draw(st.integers(0, T - R - 2), label="last changed position c")
    far = idx.clone()
    new = data.draw(st.lists(st.integers(0, config.vocab_size - 1), min_size=c + 1, max_size=c + 1), label="new")
    far[:, : c + 1] = torch.tensor(new)
    far[0, c] = (idx[0, c] + 1) % config.vocab_size  # at least one token really changes
    near = idx.clone()
    near[:, c + 1] = (idx[:, c + 1] + 1) % config.vocab_size
    with torch.no_grad():
        ref, out_far, out_near = (subject.logits(model, x) for x in (idx, far, near))
    assert_close_subject(subject, out_far[:, c + 1 + R :], ref[:, c + 1 + R :], config,
                         f"logits beyond the receptive field R = L (W - 1) = {R} after changing positions <= {c}")
    diff = (out_near[:, c + 1 + R] - ref[:, c + 1 + R]).abs().max().item()
    tol = float64_tol(config, ref)
    assert diff > tol, (f"changing position {c + 1} left the logits at {c + 1 + R} = {c + 1} + L (W - 1) unchanged "
                        f"(|difference| {diff:.2e} <= float64 bound {tol:.2e}): the window is smaller than W = {W}")


@pytest.mark.needs("sliding_window", "kv_cache")
@given(data=st.data())
def test_windowed_cache_equals_full_forward(subject, data):
    """cat(decode(chunk_i)) == forward(x) for a windowed model (per-layer pattern where the subject draws one),
    for every prompt/chunk plan; half the draws prefill more than W tokens at once."""
    window = data.draw(st.integers(subject.space.min_sliding_window, MAX_WINDOW), label="sliding_window")
    config, model, idx = draw_case(data, subject, sliding_window=window, min_len=2)
    T = idx.size(1)
    if T > window + 1 and data.draw(st.booleans(), label="prefill longer than W"):
        prompt = data.draw(st.integers(window + 1, T), label="prompt length")
        plan = [prompt] + (data.draw(decode_plans(T - prompt), label="chunks") if prompt < T else [])
    else:
        plan = data.draw(decode_plans(T), label="chunks")
    with torch.no_grad():
        full = subject.logits(model, idx)
        decoded = decode_in_chunks(subject, model, idx, plan)
    assert_close_subject(subject, decoded, full, config, f"windowed decoding (W = {window}) in chunks {plan}")
