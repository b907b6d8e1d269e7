"""Property: rotary embeddings keep their accuracy in low precision and at large positions.

The rotation angles p * theta_i reach the largest position in radians; a bfloat16 angle near p = 1000
is off by up to 2 radians, a float16 one by a quarter radian, which turns RoPE into noise long before
the end of the context (the inv_freq-in-bf16 bug of several public Llama ports). ``rope_cache``
therefore computes angles, cos and sin in float32 (float64 for a float64 model), and ``apply_rope``
rotates in that precision before rounding once to the model dtype.

Bound, per rotated pair (x_i, x_{i+h}) of norm r, against the exact rotation of the same low-precision
inputs computed in float64:
  - rounding the rotated pair to the dtype: u_d * r (u_d the dtype's unit roundoff);
  - angle error: theta_i = base^(-2i/n) in float32 has relative error <= (ln(base) + 2) u_32, the product
    with p one more u_32, so the angle is off by <= P (ln(base) + 3) u_32 for positions <= P, which
    moves the pair by as much times r;
  - cos, sin and the two products and sum in float32: <= 4 u_32 r;
so with delta = P (ln(base) + 3) u_32 + 4 u_32 the float32 pair is within delta r of the exact one and
its rounding adds u_d (1 + delta) r, plus half the dtype's subnormal spacing for pairs that tiny.
Features beyond the rotary ones pass through unchanged, exactly.
"""
import pytest
import math

import torch
from hypothesis import given, strategies as st

from gpt.embedding import apply_rope, rope_cache
from properties.harness import draw_config, gpt_only
from strategies import seeds

pytestmark = pytest.mark.gpt_internal

U32 = torch.finfo(torch.float32).eps / 2


@given(data=st.data())
def test_rope_is_accurate_in_every_dtype_at_any_position(subject, data):
    """|apply_rope_d(x, positions <= P) - rotation_64(x)| <= (u_d + (1 + u_d) delta) |pair| + subnormal / 2,
    delta = (P (ln base + 3) + 4) u_32."""
    gpt_only(subject)
    config = draw_config(data, subject, position_embedding="rope")
    dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16, torch.float32]), label="dtype")
    n, hs = config.rope_n_elem, config.head_size
    largest = data.draw(st.sampled_from([config.block_size, 1024, 8192]), label="largest position")
    T = data.draw(st.integers(1, 16), label="positions")
    g = torch.Generator().manual_seed(data.draw(seeds(), label="tensor seed"))
    pos = torch.randint(0, largest, (T,), generator=g)
    pos[-1] = largest - 1
    x = torch.randn(2, 3, T, hs, generator=g, dtype=torch.float64).to(dtype)
    out = apply_rope(x, *rope_cache(pos, n, config.rope_base, dtype))
    assert out.dtype == dtype and out.shape == x.shape

    h = n // 2
    x64 = x.double()
    theta = config.rope_base ** (-2 * torch.arange(h, dtype=torch.float64) / n)
    angle = pos[:, None].double() * theta
    x1, x2 = x64[..., :h], x64[..., h : 2 * h]
    exact = torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], dim=-1)
    r = torch.sqrt(x1 * x1 + x2 * x2).repeat(1, 1, 1, 2)
    u = torch.finfo(dtype).eps / 2
    delta = ((largest - 1) * (math.log(config.rope_base) + 3) + 4) * U32
    bound = (u + (1 + u) * delta) * r + torch.finfo(dtype).smallest_normal * u
    err = (out[..., : 2 * h].double() - exact).abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (
        f"{dtype} rotation at positions <= {largest - 1}: error {err.flatten()[worst]:.3e} exceeds "
        f"{bound.flatten()[worst]:.3e}")
    assert torch.equal(out[..., 2 * h :], x[..., 2 * h :]), "features beyond the rotary ones changed"
