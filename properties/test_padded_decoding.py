"""Issue 14, properties 5 and 6: a left-padded batch of prompts of different lengths decodes through the KV
cache, and generates greedily, exactly like each row alone."""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close_subject, build, draw_config, float64_tol
from strategies import decode_plans, padded_batches, seeds


@pytest.mark.needs("kv_cache", "attention_mask")
@given(data=st.data())
def test_left_padded_cached_decoding(subject, data):
    """Left-padded rows x_b in one (B, W) batch, decoded through a fresh cache in drawn chunks (prompt, then
    steps of any size), each call given the mask of the cached and current tokens m[:, :pos + n]:
    decoded[b, real_b] == f(x_b) for every row b. float64, summation-order bound."""
    config = draw_config(data, subject)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    batch = data.draw(padded_batches(config, sides=("left",)), label="left-padded batch")
    W = batch.idx.size(1)
    plan = data.draw(decode_plans(W), label="chunks")
    with torch.no_grad():
        subject.reset_cache(model, batch.idx.size(0), W)
        out, pos = [], 0
        for n in plan:
            out.append(subject.decode(model, batch.idx[:, pos : pos + n], pos, attention_mask=batch.mask[:, : pos + n]))
            pos += n
        decoded = torch.cat(out, dim=1)
        for b in range(batch.idx.size(0)):
            assert_close_subject(subject, decoded[b, batch.real_slice(b)], subject.logits(model, batch.real(b))[0],
                                 config, f"row {b} ({batch.lengths[b]} real tokens) decoded in chunks {plan}")


@pytest.mark.needs("batched_generation")
@given(data=st.data())
def test_batched_greedy_generation_equals_per_row(subject, data):
    """G(pad ⊕ x_b, m, n)[b, W:] == G(x_b, n)[len(x_b):] for every row b: n greedy tokens of a left-padded
    batch continue each row exactly as generating that row alone does.

    Greedy argmax is discontinuous: where the two runs first differ, the alone run's logits there must
    hold a near tie, top-1 minus the batched choice within the float64 summation-order bound (the two
    runs' logits may differ by that much); anything else is a failure. Weight matrices are scaled x20:
    at init the logits of these tiny models are nearly uniform, and a greedy path that ignores a wrong
    position (a decode step that drops the mask) would rarely flip."""
    config = draw_config(data, subject)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(20.0)
    if config.block_size < 2:
        return
    batch = data.draw(padded_batches(config, sides=("left",), max_width=config.block_size - 1), label="prompts")
    W = batch.idx.size(1)
    n = data.draw(st.integers(1, config.block_size - W), label="new tokens")
    with torch.no_grad():
        together = subject.generate_greedy(model, batch.idx, n, attention_mask=batch.mask)
        assert together.shape == (batch.idx.size(0), W + n), f"shape {tuple(together.shape)}"
        for b in range(batch.idx.size(0)):
            prompt = batch.real(b)
            alone = subject.generate_greedy(model, prompt, n)
            got, want = together[b, W:], alone[0, prompt.size(1):]
            if torch.equal(got, want):
                continue
            s = int((got != want).nonzero()[0])
            logits = subject.logits(model, alone[:, : prompt.size(1) + s])[0, -1]
            gap = (logits.max() - logits[got[s]]).item()
            tol = float64_tol(config, logits)
            assert gap <= tol, (f"row {b}: batched generation {got.tolist()} != alone {want.tolist()} from step {s}, "
                                f"not a near tie (logit gap {gap:.3e} > {tol:.3e})")
