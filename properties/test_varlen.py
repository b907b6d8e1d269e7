"""gpt internals: packed rows through flash-attn's variable-length entry point (gpt/varlen.py), on the CPU.

flash-attn's varlen kernels attend causally (window_size=(W - 1, 0)) within each sequence of cu_seqlens.
gpt.varlen turns packed rows (segment_ids) into such sequences, one per run of equal ids, and refuses what
that cannot express. With the kernel replaced by a float64 math kernel applied run by run (``_math_runs``,
which, like the CUDA kernels, computes only the first max_seqlen queries of each sequence):

- plumbing: packed_attend(q, k, v, M, math_runs) == attend(q, k, v, M, "math") (the dense mask of
  gpt.masks.visible + window) for packed rows of packed_rows, windows included;
- the check: pack(...).refusal(W) is None  <=>  blockdiag_causal_W(cu_seqlens) == M.dense() (embedded
  block-diagonally over the rows), for padded and unpadded rows, consecutive, gapped or repeated positions
  (non-decreasing within a run) and non-contiguous repeated ids (their runs start at position 0, the
  domain where the check is exact, see gpt.varlen); and cu_seqlens starts at 0, ends at B T, max_seqlen is
  the longest run;
- wiring: a float64 GPT with attn_backend="flash" (kernel replaced as above) equals the math backend on
  packed rows, packing once per forward (not per layer); where the check refuses, the forward raises a
  ValueError naming position_ids; attention_mask, and position_ids without segment_ids, are refused by name.
Tolerance: the float64 summation-order bound (properties.harness.assert_close64).
"""
import math

import pytest
import torch
from hypothesis import event, given, settings, strategies as st

import gpt.attention
import gpt.varlen
from gpt import GPT, Config
from gpt.attention import attend
from gpt.mask_spec import MaskSpec
from gpt.varlen import pack, packed_attend
from properties.harness import assert_close64
from strategies import ConfigSpace, configs, packed_rows, seeds, segment_positions

pytestmark = pytest.mark.gpt_internal
BLOCK = 12  # packed rows of up to 12 tokens
SPACE = ConfigSpace(backends=("math",), sliding_window=True, layer_types=True, attn_logit_softcap=True)


def _math_runs(q, k, v, cu_seqlens, max_seqlen, window, scale=None, softcap=None):
    """A varlen kernel in float64: causal (window_size=(left, 0), -1 unbounded) attention within each
    sequence of cu_seqlens, q (N, nh, hs) -> (N, nh, hs); queries past max_seqlen in a sequence are left NaN,
    as a CUDA kernel's launch grid (sized by max_seqlen) would leave them unwritten."""
    assert cu_seqlens.dtype == torch.int32, "flash-attn takes int32 cu_seqlens"
    left, right = window
    assert right in (0, -1), f"window_size {window}: keys right of the query"
    W = None if left < 0 else left + 1
    out = torch.full_like(q, float("nan"))
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds, bounds[1:]):
        n = min(b - a, max_seqlen)  # (1, H, L, hs) below: one sequence as a batch of one
        qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        y = attend(qs, ks, vs, MaskSpec.causal(b - a, q.device, W), 0.0, "math", softcap=softcap)
        out[a : a + n] = y[0].transpose(0, 1)[:n]
    return out


def _shapes(data):
    nqg = data.draw(st.integers(1, 2), label="kv groups")
    nh = nqg * data.draw(st.integers(1, 2), label="heads per group")
    return nh, nqg, data.draw(st.integers(1, 6), label="hs")


def _qkv(data, B, T, nh, nqg, hs):
    g = torch.Generator().manual_seed(data.draw(seeds(), label="seed"))
    q = torch.randn(B, nh, T, hs, generator=g, dtype=torch.float64)  # (B, nh, T, hs)
    k, v = (torch.randn(B, nqg, T, hs, generator=g, dtype=torch.float64) for _ in range(2))  # (B, nqg, T, hs)
    return q, k, v


@given(data=st.data())
def test_packed_plumbing_equals_dense_math(data):
    """packed_attend(q, k, v, M, math kernel per run) == attend(q, k, v, M, "math") for packed rows (runs of
    segment ids, positions counted from 0 per segment or from a drawn start, window W or none); float64."""
    rows = data.draw(packed_rows(Config(n_layer=1, n_head=1, n_embd=2, block_size=BLOCK, vocab_size=2)),
                     label="packed rows")
    B, T = rows.segment_ids.shape
    nh, nqg, hs = _shapes(data)
    starts = data.draw(st.booleans(), label="ragged segment starts")
    pos = data.draw(segment_positions(rows.spans, max_step=1, starts=starts), label="positions")  # consecutive
    window = data.draw(st.one_of(st.none(), st.integers(1, T + 1)), label="window W")
    q, k, v = _qkv(data, B, T, nh, nqg, hs)
    spec = MaskSpec(pos, pos, window, None, rows.segment_ids, rows.segment_ids)
    expected = attend(q, k, v, spec, 0.0, "math")  # (B, nh, T, hs)
    got = packed_attend(q, k, v, spec, _math_runs)
    config = Config(n_layer=1, n_head=1, n_embd=hs, block_size=T, vocab_size=2)
    assert_close64(got, expected, config, f"varlen plumbing (W={window}) vs the dense math mask")


def _rebuilt(cu_seqlens: torch.Tensor, window) -> torch.Tensor:
    """(N, N) bool: token i sees j iff both are in one sequence of cu_seqlens, j <= i and i - j < W."""
    N = int(cu_seqlens[-1])
    i = torch.arange(N)
    seq = torch.searchsorted(cu_seqlens[1:].long(), i, right=True)  # (N,) sequence of each token
    allowed = (seq[:, None] == seq[None, :]) & (i[None, :] <= i[:, None])
    if window is not None:
        allowed &= i[None, :] > i[:, None] - window
    return allowed


def _flat_dense(spec: MaskSpec, B: int, T: int) -> torch.Tensor:
    """spec.dense() (B, T, T) as the (B T, B T) block-diagonal matrix over the flattened rows."""
    return torch.block_diag(*spec.dense().expand(B, T, T).unbind(0))


@given(data=st.data())
def test_expressibility_check_is_exact(data):
    """pack(pos, seg, valid, [W]).refusal(W) is None <=> blockdiag causal_W(cu_seqlens) == M.dense(); and
    cu_seqlens[0] == 0, cu_seqlens[-1] == B T, max_seqlen == max_r (cu[r + 1] - cu[r]). Every example checks
    the packed rows as drawn and with one departure each, so every refusal is met on its own: gapped
    positions (exact or not, by the window), a repeated position, padding, an id in two runs."""
    rows = data.draw(packed_rows(Config(n_layer=1, n_head=1, n_embd=2, block_size=BLOCK, vocab_size=2)),
                     label="packed rows")
    B, T = rows.segment_ids.shape
    window = data.draw(st.one_of(st.none(), st.integers(1, T + 1)), label="window W")
    steps = {"gapped": (1, 2), "repeated position": (0, 1)}  # position steps inside a run; else 1
    for case in ("consecutive", "gapped", "repeated position", "padding", "repeated id"):
        seg = rows.segment_ids.clone()
        if case == "repeated id" and T >= 3:  # ids x, y, x at t - 1, t, t + 1: one id in two separate runs
            b = data.draw(st.integers(0, B - 1), label="row")
            t = data.draw(st.integers(1, T - 2), label="token t")
            seg[b, t], seg[b, t + 1] = 1001, seg[b, t - 1]  # packed_rows' ids are <= 1000
        starts = gpt.varlen.run_starts(seg)
        spans = [[(int(a), n) for a, n in zip(row.nonzero().flatten(), _lengths(row))] for row in starts]
        # repeated ids: every run starts at position 0, so two runs of one id always see each other (exact domain)
        lo, hi = steps.get(case, (1, 1))
        pos = data.draw(segment_positions(spans, min_step=lo, max_step=hi, starts=case != "repeated id",
                                          every_run=case in steps), label=f"{case}: positions")
        valid = None
        if case == "padding":
            valid = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=T, max_size=T), min_size=B,
                                                    max_size=B), label="kvalid"))
        packing = pack(pos, seg, valid, [window])
        cu = packing.cu_seqlens
        assert cu.dtype == torch.int32 and int(cu[0]) == 0 and int(cu[-1]) == B * T, f"cu_seqlens {cu.tolist()}"
        assert packing.max_seqlen == int(cu.diff().max()), f"max_seqlen {packing.max_seqlen} for {cu.tolist()}"
        spec = MaskSpec(pos, pos, window, valid, seg, seg)
        exact = torch.equal(_rebuilt(cu, window), _flat_dense(spec, B, T))
        reason = packing.refusal(window)
        event(f"{case}: {'exact' if exact else 'not exact'}")
        assert (reason is None) == exact, (f"{case}: check says {'exact' if reason is None else reason!r} but "
                                           f"varlen's mask {'equals' if exact else 'differs from'} the rule's "
                                           f"(W={window})")


def _lengths(starts_row: torch.Tensor) -> list:
    """Run lengths of one row from its run-start flags."""
    first = starts_row.nonzero().flatten().tolist() + [starts_row.numel()]
    return [b - a for a, b in zip(first, first[1:])]


@settings(max_examples=10)
@given(data=st.data())
def test_flash_model_packs_once_and_equals_math(data):
    """A float64 GPT with attn_backend="flash" (varlen kernel = float64 math per run) == the math backend on
    packed rows, with one packing per forward; a refused packing is a ValueError naming position_ids."""
    config = data.draw(configs(SPACE, size="tiny", attn_backend="math"), label="config")
    rows = data.draw(packed_rows(config), label="packed rows")
    with_pos = data.draw(st.booleans(), label="position_ids")
    inputs = dict(segment_ids=rows.segment_ids)
    if with_pos:  # strictly increasing within each segment, consecutive or gapped
        inputs["position_ids"] = data.draw(segment_positions(rows.spans, config.block_size), label="position_ids")
    torch.manual_seed(data.draw(seeds(), label="seed"))
    model = GPT(config).double().eval()
    flash = GPT(config.replace(attn_backend="flash")).double().eval()
    flash.load_state_dict(model.state_dict())
    calls = []
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:  # the CUDA kernel -> math per run; count packings
        mp.setattr(gpt.attention, "flash_varlen_attention", _cpu_varlen)
        mp.setattr(gpt.varlen, "pack", lambda *a: calls.append(1) or pack(*a))
        expected = model(rows.idx, **inputs)
        windows = {config.window(i) for i in range(config.n_layer)}
        pos = inputs.get("position_ids", flash_positions(rows.segment_ids))
        refused = any(pack(pos, rows.segment_ids, None, windows).refusals.values())
        event("refused" if refused else "packed")
        if refused:
            with pytest.raises(ValueError, match="position_ids"):
                flash(rows.idx, **inputs)
            return
        got = flash(rows.idx, **inputs)
    assert len(calls) == 1, f"{len(calls)} packings for one forward of {config.n_layer} layers"
    assert_close64(got, expected, config, "flash (varlen, math kernel) vs math on packed rows")


def flash_positions(seg: torch.Tensor) -> torch.Tensor:
    """masks.layout's default positions: 0, 1, ... restarting at each run of the segment ids."""
    starts = gpt.varlen.run_starts(seg)
    idx = torch.arange(seg.size(1)).expand_as(seg)
    return idx - torch.where(starts, idx, 0).cummax(dim=1).values


def _cpu_varlen(q, k, v, cu_seqlens, max_seqlen, window, dropout_p, scale, softcap=None, sinks=None):
    assert dropout_p == 0.0 and sinks is None and math.isclose(scale, q.size(-1) ** -0.5)
    return _math_runs(q, k, v, cu_seqlens, max_seqlen, window, scale, softcap)


def test_flash_refuses_padding_and_bare_positions_by_name():
    """attn_backend="flash": attention_mask, position_ids without segment_ids, and packed positions a window
    cannot express in tokens are ValueErrors naming the argument."""
    model = GPT(Config(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=5, attn_backend="flash"))
    idx = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="flash.*attention_mask"):
        model(idx, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="flash.*position_ids.*segment_ids"):
        model(idx, position_ids=torch.arange(4).expand(2, 4))
    windowed = GPT(model.config.replace(sliding_window=2))  # positions 0, 2: one key in a window of 2 positions
    with pytest.raises(ValueError, match="position_ids.*sliding_window=2"):
        windowed(idx[:, :2], segment_ids=torch.zeros(2, 2, dtype=torch.long), position_ids=torch.tensor([[0, 2]] * 2))
