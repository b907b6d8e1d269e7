"""GPU property: padded, fully masked and packed batches through every attention kernel that takes a mask.

For a drawn model config (sliding windows, soft-caps and sinks included) on CUDA in dtype d (bf16, fp16),
the same weights in float64 with the math backend give the exact logits z64. For a batch with left and
right padding (rows with no real token included: min_real = 0), or packed rows with segment ids, each kernel K
must give, at every real token,

    |z_K - z64| <= 2 |z_math,d - z64| + floor          (the flash-attention rule, harness.assert_low_precision)

and finite logits everywhere (padding positions included: fully masked rows must not turn into NaN, the
bug of pytorch/pytorch#110213). Kernels: SDPA's memory-efficient and cuDNN kernels (forced with
``sdpa_kernel``; SDPA's flash kernel takes no mask, and a refusal is "not applicable"), ``flex``
(compiled ``flex_attention`` with the mask as a ``mask_mod``), and flash-attn (``flash``: FA2's
``flash_attn_varlen_func`` or FA4's ``_flash_attn_fwd`` with cu_seqlens, through gpt/varlen.py), which takes
packed rows only (it refuses padding by design, gpt.model._check_flash) and no sinks.

Packed attention through flash-attn's varlen kernels, directly: for packed rows (runs of segment ids,
positions restarting per segment), windows and soft-caps, |out - out64| <= 2 |out_math,d - out64| + floor and
dq, dk, dv within 3x (the rule of test_gpu_attention_kernels), FA4's backward through the custom op
(gpt/flash_op.py) with cu_seqlens; and the packed call compiles with fullgraph=True (no graph break) to the
same output.
"""
import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, assume, given, note, settings, strategies as st

from gpt import GPT, Config
from gpt.attention import attend, flash_available
from gpt.mask_spec import MaskSpec
from gpt.varlen import pack, run_starts
from properties.gpu import compiled_examples, device
from properties.harness import assert_low_precision
from strategies import ConfigSpace, configs, packed_rows, padded_batches, seeds

pytestmark = [pytest.mark.gpu, pytest.mark.gpt_internal]
SPACE = ConfigSpace(backends=("math",), free_head_size=False, sliding_window=True, layer_types=True,
                    attn_logit_softcap=True, final_logit_softcap=True, attention_sinks=True)
KERNELS = ("sdpa-efficient", "sdpa-cudnn", "flex", "flash")
FLASH_MISSING = "flash-attn is not installed (the `gpu` extra: flash-attn for FA2, or flash-attn-4 for FA4)"


def _flash_refusal(e: Exception) -> bool:
    """flash-attn's own shape refusals (FA4: "... is not supported on SM90", FA2: "only supports ...")."""
    return "not supported" in str(e) or "only supports" in str(e)


def _logits(model, kernel, idx, **inputs):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kernel in ("flex", "math", "flash"):
        return model(idx, **inputs)
    backend = {"sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION}[kernel]
    with sdpa_kernel(backend):
        return model(idx, **inputs)


def _model(config, seed, dtype, backend):
    torch.manual_seed(seed)
    weights = GPT(config.replace(attn_backend="math")).state_dict()
    model = GPT(config.replace(attn_backend=backend))
    model.load_state_dict(weights)
    return model.to(device=device(), dtype=dtype).eval()


@pytest.mark.parametrize("kernel", KERNELS)
@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow], max_examples=compiled_examples(),
          deadline=None)
@given(data=st.data())
def test_masked_kernel_logits_within_twice_math_error(kernel, data):
    """Padded (and all-padding) rows or packed rows: |z_K - z64| <= 2 |z_math,d - z64| + floor at real
    tokens; every logit finite. flash: packed rows only, no sinks."""
    if kernel == "flash" and not flash_available():
        pytest.skip(FLASH_MISSING)
    head_size = data.draw(st.sampled_from([32, 64]), label="head_size")
    space = SPACE if kernel != "flash" else dataclasses.replace(SPACE, attention_sinks=False)
    config = data.draw(configs(space, size="medium", head_size=head_size), label="config")
    seed = data.draw(seeds(), label="seed")
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]), label="dtype")
    if kernel == "flash" or data.draw(st.booleans(), label="packed"):
        rows = data.draw(packed_rows(config), label="packed rows")
        idx, inputs, real = rows.idx, dict(segment_ids=rows.segment_ids.to(device())), torch.ones_like(rows.idx)
    else:
        batch = data.draw(padded_batches(config, min_real=0), label="padded batch")
        idx, inputs, real = batch.idx, dict(attention_mask=batch.mask.to(device())), batch.mask
    idx, real = idx.to(device()), real.to(device()).bool()
    backend = kernel if kernel in ("flex", "flash") else "sdpa"
    with torch.no_grad():
        exact = _logits(_model(config, seed, torch.float64, "math"), "math", idx, **inputs)
        same_dtype = _logits(_model(config, seed, dtype, "math"), "math", idx, **inputs)
        try:
            got = _logits(_model(config, seed, dtype, backend), kernel, idx, **inputs)
        except (RuntimeError, AssertionError, ValueError, NotImplementedError) as e:
            # SDPA: no kernel of the forced kind for this mask/shape/dtype; flash-attn: a shape it has no tile for
            if "No available kernel" not in str(e) and "No viable backend" not in str(e) and not (
                    kernel == "flash" and _flash_refusal(e)):
                raise
            note(f"{kernel} not applicable: {e}")
            assume(False)
    assert torch.isfinite(got).all(), f"{kernel} {dtype}: non-finite logits (fully masked rows?)"
    if real.any():
        assert_low_precision(got[real], same_dtype[real], exact[real], 2, f"{kernel} {dtype} masked logits")


def _packed_case(data, dev, max_len: int = 300):
    """(q, k, v) float64 (B, nh, T, hs) / (B, nqg, T, hs) on ``dev``, the packed rows' MaskSpec (positions
    0, 1, ... per segment, as masks.layout counts them), a probe for the gradients, window and soft-cap."""
    rows = data.draw(packed_rows(Config(n_layer=1, n_head=1, n_embd=2, block_size=max_len, vocab_size=2),
                                 max_batch=3, max_segments=6), label="packed rows")
    seg = rows.segment_ids.to(dev)
    B, T = seg.shape
    nqg = data.draw(st.sampled_from([1, 2, 4]), label="n_query_groups")
    nh = nqg * data.draw(st.sampled_from([1, 2, 3]), label="heads per group")
    hs = data.draw(st.sampled_from([32, 64, 96, 128]), label="head_size")  # FA4's backward is right for these
    window = data.draw(st.one_of(st.none(), st.integers(1, 300)), label="window W")
    softcap = data.draw(st.one_of(st.none(), st.sampled_from([1.0, 30.0])), label="softcap")
    gen = torch.Generator(device=dev).manual_seed(data.draw(seeds(), label="seed"))
    q = 3 * torch.randn(B, nh, T, hs, device=dev, generator=gen, dtype=torch.float64)  # scores beyond the caps
    k, v = (torch.randn(B, nqg, T, hs, device=dev, generator=gen, dtype=torch.float64) for _ in range(2))
    idx = torch.arange(T, device=dev).expand(B, T)
    pos = idx - torch.where(run_starts(seg), idx, 0).cummax(dim=1).values  # (B, T) restarting per segment
    spec = MaskSpec(pos, pos, window, None, seg, seg)
    probe = torch.randn(B, nh, T, hs, device=dev, generator=gen)
    return (q, k, v), spec, probe, window, softcap


def _forward_backward(fn, q, k, v, probe):
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    (out.float() * probe).sum().backward()
    return out.detach(), (q.grad, k.grad, v.grad)


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow], max_examples=compiled_examples(),
          deadline=None)
@given(data=st.data())
def test_packed_flash_attention_and_gradients_within_math_rule(data):
    """Packed rows through flash-attn's varlen kernels: out <= 2x, dq/dk/dv <= 3x the same-dtype math error vs
    float64 (dense mask of the same rule), + floor; windows and soft-caps included."""
    if not flash_available():
        pytest.skip(FLASH_MISSING)
    dev = device()
    qkv64, spec, probe, window, softcap = _packed_case(data, dev)
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]), label="dtype")
    low = [t.to(dtype) for t in qkv64]
    spec.varlen = pack(spec.qpos, spec.qseg, None, [window])  # as model.forward hands it to the layers
    try:
        out, grads = _forward_backward(lambda *a: attend(*a, spec, 0.0, "flash", softcap), *low, probe)
    except (RuntimeError, AssertionError, ValueError, NotImplementedError) as e:
        if not _flash_refusal(e):
            raise
        note(f"flash not applicable: {e}")
        assume(False)
    dense = MaskSpec(spec.qpos, spec.kpos, window, None, spec.qseg, spec.kseg)
    reference = lambda *a: attend(*a, dense, 0.0, "math", softcap)  # noqa: E731
    ref_out, ref_grads = _forward_backward(reference, *low, probe)
    out64, grads64 = _forward_backward(reference, *qkv64, probe.double())
    scale = max(t.abs().max().item() for t in (out64, *grads64))
    what = f"packed flash {dtype} W={window} c={softcap}"
    assert_low_precision(out, ref_out, out64, 2, f"{what} output", scale)
    for name, got, ref, exact in zip("qkv", grads, ref_grads, grads64):
        assert_low_precision(got, ref, exact, 3, f"{what} d{name}", scale)


def test_packed_flash_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) of packed flash attention (a Packing computed outside, as model.forward
    does) traces without a graph break and gives the eager output."""
    if not flash_available():
        pytest.skip(FLASH_MISSING)
    dev = device()
    seg = torch.tensor([[0] * 40 + [1] * 90 + [2] * 30, [5] * 100 + [6] * 60], device=dev)  # (2, 160)
    idx = torch.arange(seg.size(1), device=dev).expand_as(seg)
    pos = idx - torch.where(run_starts(seg), idx, 0).cummax(dim=1).values
    spec = MaskSpec(pos, pos, 64, None, seg, seg, varlen=pack(pos, seg, None, [64]))
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(2, 4, 160, 64, device=dev, generator=gen, dtype=torch.bfloat16) for _ in range(3))
    fn = lambda q, k, v: attend(q, k, v, spec, 0.0, "flash", 30.0)  # noqa: E731
    eager = fn(q, k, v)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)(q, k, v)
    assert torch.equal(compiled, eager), f"compiled packed flash differs: {(compiled - eager).abs().max().item():.3e}"
