"""Property 15: low precision. bfloat16/float16 logits stay within 2x the error that the same-dtype math
reference makes against a float64 reference, plus a noise floor (the flash-attention test rule).

Noise floor: twice the rounding error of merely representing the float64 logits in the low dtype,
2 * max|fl(ref + 0.3) - 0.3 - ref| as in flash-attention's tests; it keeps the bound from collapsing when
the reference happens to round well. (properties.harness.assert_low_precision)
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_low_precision, build, draw_config
from strategies import seeds, token_batches


@pytest.mark.needs("low_precision")
@given(data=st.data())
def test_low_precision_error_is_bounded_by_math_reference(subject, data):
    """|f_dtype,backend(x) - f_64(x)| <= 2 |f_dtype,math(x) - f_64(x)| + floor, all from the same weights."""
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16]), label="dtype")
    backend = data.draw(st.sampled_from(subject.space.backends), label="backend")
    reference_backend = "math" if "math" in subject.space.backends else backend
    config = draw_config(data, subject, attn_backend=reference_backend)
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config), label="idx")
    with torch.no_grad():
        ref64 = subject.logits(build(subject, config, seed, torch.float64), idx)
        ref_low = subject.logits(build(subject, config, seed, dtype), idx)
        out_low = subject.logits(build(subject, config.replace(attn_backend=backend), seed, dtype), idx)
    assert_low_precision(out_low, ref_low, ref64, 2, f"{backend} {dtype} logits")
