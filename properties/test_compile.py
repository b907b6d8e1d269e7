"""Property 4: torch.compile(fullgraph=True) == eager, with zero graph breaks, with and without a KV cache.

CPU inductor compiles for tens of seconds per graph on a busy 2-core host (8 s and 37 s measured), so these
are ``slow`` and run in the nightly profile only (``--hypothesis-profile nightly``), or with
GPT_PROPERTIES_COMPILE=1; the default run skips them with that reason.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from gpt.config import Config
from gpt.loss import cross_entropy
from properties.harness import assert_low_precision, gpt_only

CONFIG = Config(vocab_size=17, n_layer=2, n_embd=16, n_head=4, n_query_groups=2, block_size=12,
                padding_multiple=1, position_embedding="rope")


@pytest.fixture(autouse=True)
def _nightly_only():
    if settings.get_current_profile_name() != "nightly" and os.environ.get("GPT_PROPERTIES_COMPILE") != "1":
        pytest.skip("torch.compile on CPU inductor costs 10-40 s: nightly profile or GPT_PROPERTIES_COMPILE=1")


def _build(dtype):
    from gpt.model import GPT

    torch.manual_seed(0)
    return GPT(CONFIG).to(dtype).eval()


def _graph_breaks(fn, *args, **kw) -> int:
    """Graph breaks dynamo reports for one call (torch._dynamo.explain)."""
    import torch._dynamo

    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args, **kw).graph_break_count


def _forward_and_grads(fn, model, idx, y):
    model.zero_grad(set_to_none=True)
    logits = fn(idx)
    cross_entropy(logits, y, reduction="mean").backward()
    return logits.detach(), [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.gpt_internal
@pytest.mark.slow
def test_compiled_forward_and_grads_match_eager(subject):
    """|f_compiled32 - f64| <= 2 |f_eager32 - f64| + floor for the logits and every gradient (the
    flash-attention same-dtype rule: inductor may fuse and reorder, but may not be less accurate than eager
    twice over), and dynamo traces the forward as one graph: 0 graph breaks."""
    gpt_only(subject)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, CONFIG.vocab_size, (2, 10), generator=g)
    y = torch.randint(0, CONFIG.vocab_size, (2, 10), generator=g)
    m64, m32 = _build(torch.float64), _build(torch.float32)
    assert _graph_breaks(m32, idx) == 0, "the forward does not compile as one graph"
    ref_logits, ref_grads = _forward_and_grads(m64, m64, idx, y)
    eager_logits, eager_grads = _forward_and_grads(m32, m32, idx, y)
    compiled = torch.compile(m32, fullgraph=True)
    c_logits, c_grads = _forward_and_grads(compiled, m32, idx, y)
    assert_low_precision(c_logits, eager_logits, ref_logits, 2, "compiled logits")
    for i, (c, e, r) in enumerate(zip(c_grads, eager_grads, ref_grads)):
        assert_low_precision(c, e, r, 2, f"compiled gradient of parameter {i}", accumulation_scale=r.abs().max().item())


@pytest.mark.gpt_internal
@pytest.mark.slow
def test_compiled_cached_decoding_matches_eager(subject):
    """The same rule for cached decoding (prefill of 6 tokens, then 1-token steps with a tensor input_pos),
    and 0 graph breaks for the decoding step.

    Known finding (xfail, reported, not hidden): gpt's cached forward derives the attended cache length from
    input_pos with ``int(input_pos.max())`` (``GPT._positions``), a data-dependent shape, so dynamo breaks the
    graph there (3 breaks on torch 2.13). The positions-based KV cache (issue 14) can make it static; until
    then the accuracy half of this property runs without fullgraph and the break count is an xfail."""
    gpt_only(subject)
    idx = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))

    def decode(model, fn):
        model.set_kv_cache(2, CONFIG.block_size)
        out = [fn(idx[:, :6], torch.arange(6))]
        for t in range(6, 9):
            out.append(fn(idx[:, t:t + 1], torch.tensor([t])))
        model.clear_kv_cache()
        return torch.cat(out, 1)

    m64, m32 = _build(torch.float64), _build(torch.float32)
    with torch.no_grad():
        m32.set_kv_cache(2, CONFIG.block_size)
        breaks = _graph_breaks(m32, idx[:, :1], torch.tensor([0]))
        m32.clear_kv_cache()
        ref = decode(m64, m64)
        eager = decode(m32, m32)
        compiled = decode(m32, torch.compile(m32, fullgraph=breaks == 0))
    assert_low_precision(compiled, eager, ref, 2, "compiled cached-decoding logits")
    if breaks:
        pytest.xfail(f"cached decoding has {breaks} graph breaks (int(input_pos.max()) in GPT._positions)")
