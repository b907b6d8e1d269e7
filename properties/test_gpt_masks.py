"""gpt internals of issue 14: the documented value of a query with no visible key, the visibility rule of
gpt.masks, the KV cache's stored slot positions, and the errors for bad mask / position / segment inputs.

The value: attention output exactly 0 for a query row whose mask allows no key, in every backend and dtype
(and finite gradients through such rows); other rows equal softmax over their allowed keys.
"""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from gpt import GPT, Config
from gpt.attention import attend
from gpt.generate import generate
from gpt.masks import visible
from properties.harness import assert_close64, assert_low_precision, gpt_only

pytestmark = pytest.mark.gpt_internal
BACKENDS = ("math", "sdpa")


def _reference(q, k, v, mask):
    """float64 softmax(q k^T / sqrt(hs)) v over each row's allowed keys; 0 for rows with none."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    m = mask[:, None]
    w = torch.where(m, (att - att.masked_fill(~m, -1e300).amax(-1, keepdim=True)).exp(), torch.zeros_like(att))
    denom = w.sum(-1, keepdim=True)
    return torch.where(denom > 0, (w / denom.clamp(min=1e-300)) @ v, torch.zeros_like(q))


@given(data=st.data())
def test_masked_attention_value_every_backend_and_dtype(subject, data):
    """attend(q, k, v, M) == softmax_M(q k^T / sqrt(hs)) v row by row, and exactly 0 where M's row is all
    False, for math and sdpa in float64 (summation-order bound) and float32/bfloat16/float16 (finite, exact 0
    in empty rows, the 2x rule against the float64 reference); the gradient is finite everywhere."""
    gpt_only(subject)
    backend = data.draw(st.sampled_from([b for b in BACKENDS if b in subject.space.backends]), label="backend")
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]), label="dtype")
    B, nqg, rep, T, S, hs = (data.draw(st.integers(1, n), label=lbl) for n, lbl in
                             ((2, "B"), (2, "groups"), (2, "heads per group"), (5, "T"), (6, "S"), (8, "hs")))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    q64 = torch.randn(B, nqg * rep, T, hs, generator=g, dtype=torch.float64)
    k64, v64 = (torch.randn(B, nqg, S, hs, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.rand(B, T, S, generator=g) < data.draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]), label="keep")
    empty = ~mask.any(-1)  # (B, T)
    ref = _reference(q64, k64, v64, mask)
    q, k, v = (t.to(dtype).requires_grad_() for t in (q64, k64, v64))
    out = attend(q, k, v, mask, 0.0, backend)
    out.float().sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v)), \
        f"{backend} {dtype}: non-finite output or gradient with fully masked rows {empty.nonzero().tolist()}"
    assert (out.detach()[empty[:, None].expand(-1, out.size(1), -1)] == 0).all(), \
        f"{backend} {dtype}: a query with no visible key must give attention output 0"
    if dtype == torch.float64:
        config = Config(n_layer=1, n_head=1, n_embd=hs, block_size=S, vocab_size=2)
        assert_close64(out.detach(), ref, config, f"{backend} masked attention vs float64 reference")
    else:
        same = _reference(q64.to(dtype), k64.to(dtype), v64.to(dtype), mask).to(dtype)  # the same rule, rounded
        assert_low_precision(out.detach(), same, ref, 2.0, f"{backend} {dtype} masked attention",
                             accumulation_scale=v64.abs().max().item())


def test_visibility_rule():
    """visible(qpos, kpos, kvalid, seg, seg)[b, i, j] == kvalid[b, j] and seg[b, i] == seg[b, j] and
    kpos[b, j] <= qpos[b, i], checked against the definition element by element."""
    g = torch.Generator().manual_seed(0)
    qpos, kpos = torch.randint(0, 6, (2, 4), generator=g), torch.randint(0, 6, (2, 5), generator=g)
    kvalid = torch.rand(2, 5, generator=g) < 0.6
    qseg, kseg = torch.randint(0, 2, (2, 4), generator=g), torch.randint(0, 2, (2, 5), generator=g)
    got = visible(qpos, kpos, kvalid, qseg, kseg)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                want = bool(kvalid[b, j]) and int(qseg[b, i]) == int(kseg[b, j]) and int(kpos[b, j]) <= int(qpos[b, i])
                assert bool(got[b, i, j]) == want, (b, i, j)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cache_stores_slot_positions_and_validity(subject, backend):
    """After decoding a left-padded batch, every layer's cache holds pos[b, s] = cumsum(m)[b, s] - 1 at its
    real slots and valid[b, s] = m[b, s] (slots never written stay invalid)."""
    gpt_only(subject)
    torch.manual_seed(0)
    model = GPT(Config(n_layer=2, n_head=2, n_embd=8, vocab_size=11, block_size=10, attn_backend=backend,
                       position_embedding="rope")).double().eval()
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    idx = torch.randint(0, 11, (2, 5))
    model.set_kv_cache(2, 8)
    with torch.no_grad():
        model(idx[:, :3], input_pos=0, attention_mask=mask[:, :3])
        model(idx[:, 3:], input_pos=3, attention_mask=mask)
    for block in model.blocks:
        cache = block.attn.kv_cache
        assert torch.equal(cache.valid[:, :5], mask.bool()) and not cache.valid[:, 5:].any()
        assert torch.equal(cache.pos[:, :5][mask.bool()], ((mask.cumsum(1) - 1)[mask.bool()]))


def _model(**kw):
    torch.manual_seed(0)
    return GPT(Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=8, **kw)).double().eval()


IDX = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
BAD = [  # (forward kwargs, error, words the message must contain)
    (dict(attention_mask=torch.ones(2, 3, dtype=torch.long)), ValueError, ["attention_mask", "shape"]),
    (dict(attention_mask=torch.ones(2, 4)), TypeError, ["attention_mask", "dtype"]),
    (dict(attention_mask=torch.full((2, 4), 2)), ValueError, ["attention_mask", "0", "1"]),
    (dict(position_ids=torch.tensor([[0, 1, 2, 8], [0, 1, 2, 3]])), ValueError, ["position_ids", "block_size"]),
    (dict(position_ids=torch.tensor([[0, 1, 2, 3], [-1, 0, 1, 2]])), ValueError, ["position_ids", "[0"]),
    (dict(position_ids=torch.tensor([[0, 2, 1, 3], [0, 1, 2, 3]])), ValueError, ["position_ids", "increase"]),
    (dict(position_ids=torch.tensor([[0, 1, 1, 2], [0, 1, 2, 3]])), ValueError, ["position_ids", "increase"]),
    (dict(position_ids=torch.zeros(2, 4)), TypeError, ["position_ids", "integer"]),
    (dict(position_ids=torch.zeros(1, 4, dtype=torch.long)), ValueError, ["position_ids", "shape"]),
    (dict(segment_ids=torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]])), ValueError, ["segment_ids", "contiguous"]),
    (dict(segment_ids=torch.zeros(2, 4)), TypeError, ["segment_ids", "integer"]),
    (dict(segment_ids=torch.zeros(2, 5, dtype=torch.long)), ValueError, ["segment_ids", "shape"]),
    (dict(segment_ids=torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]), position_ids=torch.tensor([[0, 1, 3, 2], [0, 1, 2, 3]])),
     ValueError, ["position_ids", "segment"]),
    (dict(input_pos=2, attention_mask=torch.ones(2, 4, dtype=torch.long)), ValueError, ["input_pos", "position_ids"]),
]


@pytest.mark.parametrize("kw,error,words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_inputs_are_refused(subject, kw, error, words):
    """Each bad mask / position / segment input raises ``error`` naming the argument and the rule."""
    gpt_only(subject)
    with pytest.raises(error) as info:
        _model()(IDX, **kw)
    assert all(w in str(info.value) for w in words), f"{info.value!r} should mention {words}"


def test_bad_cached_inputs_are_refused(subject):
    """With a KV cache: attention_mask must be (B, input_pos + T); segment_ids are refused."""
    gpt_only(subject)
    model = _model()
    model.set_kv_cache(2, 8)
    with pytest.raises(ValueError, match=r"attention_mask.*input_pos \+ T"):
        model(IDX, input_pos=0, attention_mask=torch.ones(2, 3, dtype=torch.long))
    model.set_kv_cache(2, 8)
    with pytest.raises(ValueError, match="segment_ids"):
        model(IDX, input_pos=0, segment_ids=torch.zeros(2, 4, dtype=torch.long))


def test_generate_refuses_rows_without_a_token_to_continue(subject):
    """generate needs each row's last prompt token real: a right-padded or all-padding row is refused."""
    gpt_only(subject)
    model = _model()
    for mask in (torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]), torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])):
        with pytest.raises(ValueError, match=r"attention_mask\[:, -1\]"):
            generate(model, IDX, 2, temperature=0.0, attention_mask=mask)


def test_flash_refuses_masks(subject):
    """attn_backend='flash' refuses attention_mask, position_ids and segment_ids with a clear error."""
    gpt_only(subject)
    with pytest.raises(ValueError, match="flash.*attention_mask"):
        _model(attn_backend="flash")(IDX, attention_mask=torch.ones(2, 4, dtype=torch.long))
