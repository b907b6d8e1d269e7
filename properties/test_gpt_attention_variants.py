"""gpt internals: attention soft-capping, sinks and the windowed cache's size, against closed forms (float64).

- soft-capping: attend(q, k, v, cap=c) == softmax(c tanh(s / c) + mask) v with s = q k^T / sqrt(hs) (Gemma 2:
  cap, then mask), for every backend; hence within a row the capped scores differ by at most 2c, so
  log p_max - log p_min <= 2c over the visible keys whatever the scale of q and k;
- sinks: with q = 0 (every score 0) and v = 1, head h's output at a query with n visible keys is
  n / (n + e^{s_h}) (GPT-OSS: e^{s_h} joins the denominator, carries no value), per head, for every backend;
- a sliding-window layer's KV cache holds min(W, max_seq_length) slots (a ring), a global layer's the full length;
  it re-decodes its last slot exactly and refuses (ValueError) what it no longer holds or cannot hold.
Tolerance: float64 summation order, n u (1 + max|ref|) with n the longest reduction (S keys, hs features).
"""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from gpt import GPT, Config
from gpt.attention import attend, attention_probs
from gpt.mask_spec import MaskSpec
from strategies import seeds

pytestmark = pytest.mark.gpt_internal

BACKENDS = ("math", "sdpa")  # flex is held to math in test_gpt_flex (its CPU traces are slow); flash: GPU group


def _shapes(data):
    nqg = data.draw(st.integers(1, 2), label="kv groups")
    nh = nqg * data.draw(st.integers(1, 2), label="heads per group")
    T = data.draw(st.integers(1, 6), label="queries T")
    S = T + data.draw(st.integers(0, 4), label="cached keys S - T")
    window = data.draw(st.one_of(st.none(), st.integers(1, S)), label="window")
    spec = MaskSpec(torch.arange(S - T, S)[None], torch.arange(S)[None], window)  # the last T of S positions
    return nh, nqg, T, S, window, spec


def _tol(ref: torch.Tensor, n: int) -> float:
    return 4 * n * torch.finfo(torch.float64).eps * (1 + ref.abs().max().item())


@given(data=st.data())
def test_attention_softcap_closed_form(data):
    """attend(..., softcap=c) == softmax(c tanh(q k^T / sqrt(hs) / c) + mask) v; log-probability spread <= 2c."""
    nh, nqg, T, S, window, spec = _shapes(data)
    B, hs = data.draw(st.integers(1, 2), label="B"), data.draw(st.integers(1, 8), label="hs")
    cap = data.draw(st.sampled_from([0.1, 1.0, 5.0]), label="softcap")
    amplitude = data.draw(st.sampled_from([0.3, 10.0]), label="q, k scale")  # 10: raw scores far beyond c
    g = torch.Generator().manual_seed(data.draw(seeds(), label="seed"))
    q = amplitude * torch.randn(B, nh, T, hs, generator=g, dtype=torch.float64)
    k = amplitude * torch.randn(B, nqg, S, hs, generator=g, dtype=torch.float64)
    v = torch.randn(B, nqg, S, hs, generator=g, dtype=torch.float64)
    kk, vv = k.repeat_interleave(nh // nqg, 1), v.repeat_interleave(nh // nqg, 1)
    scores = cap * torch.tanh(q @ kk.transpose(-1, -2) / math.sqrt(hs) / cap)  # (B, nh, T, S)
    allowed = spec.dense()[:, None]  # (1, 1, T, S)
    expected = torch.softmax(scores.masked_fill(~allowed, -math.inf), -1) @ vv
    with torch.no_grad():
        for backend in BACKENDS:
            out = attend(q, k, v, spec, 0.0, backend, softcap=cap)
            err = (out - expected).abs().max().item()
            assert err <= _tol(expected, S + hs), f"{backend}: capped attention off the closed form by {err:.2e}"
    logp = attention_probs(q, k, allowed, 1 / math.sqrt(hs), softcap=cap).log()
    spread = logp.masked_fill(~allowed, -math.inf).amax(-1) - logp.masked_fill(~allowed, math.inf).amin(-1)
    assert spread.max().item() <= 2 * cap + _tol(logp.masked_fill(~allowed, 0), S), \
        f"capped scores spread {spread.max().item():.4f} > 2c = {2 * cap}"


@given(data=st.data())
def test_sinks_closed_form(data):
    """q = 0, v = 1: attend(..., sinks=s)[b, h, i, :] == n_i / (n_i + e^{s_h}), n_i the visible keys of query i."""
    nh, nqg, T, S, window, spec = _shapes(data)
    B, hs = data.draw(st.integers(1, 2), label="B"), data.draw(st.integers(1, 8), label="hs")
    sinks = torch.tensor(data.draw(st.lists(st.floats(-4, 4), min_size=nh, max_size=nh), label="sinks"),
                         dtype=torch.float64)
    cap = data.draw(st.one_of(st.none(), st.just(2.0)), label="softcap")  # cap(0) = 0: no change expected
    g = torch.Generator().manual_seed(data.draw(seeds(), label="seed"))
    q = torch.zeros(B, nh, T, hs, dtype=torch.float64)
    k = torch.randn(B, nqg, S, hs, generator=g, dtype=torch.float64)
    v = torch.ones(B, nqg, S, hs, dtype=torch.float64)
    n = spec.dense()[0].sum(-1).to(torch.float64)  # (T,) visible keys per query
    expected = (n[None, :] / (n[None, :] + sinks.exp()[:, None]))[None, :, :, None].expand(B, nh, T, hs)
    with torch.no_grad():
        for backend in BACKENDS:
            out = attend(q, k, v, spec, 0.0, backend, softcap=cap, sinks=sinks)
            err = (out - expected).abs().max().item()
            assert err <= _tol(expected, S), f"{backend}: sink output off n / (n + e^s) by {err:.2e}"


@given(data=st.data())
def test_windowed_cache_is_bounded_by_the_window(data):
    """After set_kv_cache(B, M), a layer with window W caches min(W, M) slots; a global layer caches M."""
    window = data.draw(st.integers(1, 6), label="W")
    types = data.draw(st.tuples(*[st.sampled_from(("full_attention", "sliding_attention"))] * 2), label="types")
    M = data.draw(st.integers(1, 12), label="max_seq_length")
    config = Config(vocab_size=8, block_size=12, n_layer=2, n_head=2, n_embd=8, sliding_window=window,
                    layer_types=types)
    model = GPT(config)
    model.set_kv_cache(2, M)
    for block, kind in zip(model.blocks, types):
        expected = min(window, M) if kind == "sliding_attention" else M
        assert block.attn.kv_cache.k.size(2) == expected, f"{kind} layer caches {block.attn.kv_cache.k.size(2)} slots"
    assert model.kv_cache_length == M


def test_windowed_cache_rewinds_one_slot_and_refuses_what_it_no_longer_holds():
    """A ring of W slots re-decodes the last slot exactly (it still holds the W - 1 before it); rewinding further,
    skipping slots, or padding inside a row (a window wider than W slots) raise a ValueError, never a wrong answer."""
    torch.manual_seed(0)
    config = Config(vocab_size=16, block_size=12, n_layer=2, n_head=2, n_embd=8, sliding_window=3)
    model = GPT(config).double().eval()
    idx = torch.randint(0, 16, (2, 10))
    with torch.no_grad():
        full = model(idx)
        model.set_kv_cache(2, 10)
        model(idx[:, :8], input_pos=0)
        again = model(idx[:, 7:8], input_pos=7)  # rewind one slot
        assert (again - full[:, 7:8]).abs().max().item() < 1e-12, "re-decoding the last slot differs"
        with pytest.raises(ValueError, match="sliding-window KV cache"):
            model(idx[:, 5:6], input_pos=5)  # needs slots 3..4, overwritten by 6..7
        model.set_kv_cache(2, 10)
        model(idx[:, :4], input_pos=0)
        with pytest.raises(ValueError, match="consecutive"):
            model(idx[:, :2], input_pos=torch.tensor([1, 3]))
        model.set_kv_cache(2, 10)
        mask = torch.ones(2, 10, dtype=torch.long)
        mask[1, 2:6] = 0  # row 1: padding inside the row, so its window spans more than W slots
        with pytest.raises(ValueError, match="padding between its real tokens"):
            for t in range(10):
                model(idx[:, t : t + 1], input_pos=t, attention_mask=mask[:, : t + 1])


def test_speculative_decoding_rewinds_windowed_caches():
    """speculative(target, draft, x, n, k, T=0) == greedy decoding of the target by full forwards when both
    models slide windows: set_kv_cache(rollback=k) keeps W + k slots, enough for every rejected draft."""
    from gpt.speculative import speculative

    torch.manual_seed(0)
    config = Config(vocab_size=16, block_size=20, n_layer=2, n_head=2, n_embd=8, sliding_window=2)
    target, draft = GPT(config).double().eval(), GPT(config.replace(sliding_window=1, n_layer=1)).double().eval()
    idx = torch.randint(0, 16, (2, 4))
    with torch.no_grad():
        for p in target.parameters():
            p.mul_(5)  # far from uniform: the random draft is mostly rejected, so the caches rewind
        out = speculative(target, draft, idx, 12, k=4, temperature=0.0)
        x = idx
        for _ in range(12):
            x = torch.cat([x, target(x)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, x), "speculative decoding with windowed models differs from greedy target decoding"
