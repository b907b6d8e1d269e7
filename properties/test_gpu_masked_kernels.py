"""GPU property: padded, fully masked and packed batches through every attention kernel that takes a mask.

For a drawn model config (sliding windows, soft-caps and sinks included) on CUDA in dtype d (bf16, fp16),
the same weights in float64 with the math backend give the exact logits z64. For a batch with left and
right padding (rows with no real token included: min_real = 0), or packed rows with segment ids, each kernel K
must give, at every real token,

    |z_K - z64| <= 2 |z_math,d - z64| + floor          (the flash-attention rule, harness.assert_low_precision)

and finite logits everywhere (padding positions included: fully masked rows must not turn into NaN, the
bug of pytorch/pytorch#110213). Kernels: SDPA's memory-efficient and cuDNN kernels (forced with
``sdpa_kernel``; SDPA's flash kernel takes no mask, and a refusal is "not applicable"), and ``flex``
(compiled ``flex_attention`` with the mask as a ``mask_mod``). FlashAttention (``flash``) refuses masks by
design (gpt.model._check_flash): packed sequences through flash-attn's varlen entry point are not wired.
"""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, note, settings, strategies as st

from gpt import GPT
from properties.gpu import compiled_examples, device
from properties.harness import assert_low_precision
from strategies import ConfigSpace, configs, packed_rows, padded_batches, seeds

pytestmark = [pytest.mark.gpu, pytest.mark.gpt_internal]
SPACE = ConfigSpace(backends=("math",), free_head_size=False, sliding_window=True, layer_types=True,
                    attn_logit_softcap=True, final_logit_softcap=True, attention_sinks=True)
KERNELS = ("sdpa-efficient", "sdpa-cudnn", "flex")


def _logits(model, kernel, idx, **inputs):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kernel in ("flex", "math"):
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
    tokens; every logit finite."""
    head_size = data.draw(st.sampled_from([32, 64]), label="head_size")
    config = data.draw(configs(SPACE, size="medium", head_size=head_size), label="config")
    seed = data.draw(seeds(), label="seed")
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]), label="dtype")
    if data.draw(st.booleans(), label="packed"):
        rows = data.draw(packed_rows(config), label="packed rows")
        idx, inputs, real = rows.idx, dict(segment_ids=rows.segment_ids.to(device())), torch.ones_like(rows.idx)
    else:
        batch = data.draw(padded_batches(config, min_real=0), label="padded batch")
        idx, inputs, real = batch.idx, dict(attention_mask=batch.mask.to(device())), batch.mask
    idx, real = idx.to(device()), real.to(device()).bool()
    backend = "flex" if kernel == "flex" else "sdpa"
    with torch.no_grad():
        exact = _logits(_model(config, seed, torch.float64, "math"), "math", idx, **inputs)
        same_dtype = _logits(_model(config, seed, dtype, "math"), "math", idx, **inputs)
        try:
            got = _logits(_model(config, seed, dtype, backend), kernel, idx, **inputs)
        except RuntimeError as e:  # SDPA: no kernel of the forced kind for this mask/shape/dtype
            if "No available kernel" not in str(e) and "No viable backend" not in str(e):
                raise
            note(f"{kernel} not applicable: {e}")
            assume(False)
    assert torch.isfinite(got).all(), f"{kernel} {dtype}: non-finite logits (fully masked rows?)"
    if real.any():
        assert_low_precision(got[real], same_dtype[real], exact[real], 2, f"{kernel} {dtype} masked logits")
