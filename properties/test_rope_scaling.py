"""RoPE scaling laws (gpt.rope_scaling): the tables ``rope_cache`` builds follow the published formulas band
by band, and stay accurate in low-precision models up to the scaled context.

The frequencies are read back from the table the model uses: at position 1 the angle is theta'_i itself
(theta' <= 1 < pi, so atan2(sin, cos) recovers it), and the YaRN attention factor is sqrt(cos^2 + sin^2).
In float64, atan2 of a float64 cos/sin pair is within 4 u of the float64 angle, and the angle itself is
within (ln base + 3) u of theta' (as in test_gpt_rope_precision), so every comparison below allows
(ln base + 8) u relative, u = 2^-53. Published formulas, written out here independently of gpt/:

* linear (Chen et al. 2023): theta' = theta / f, i.e. cos'(p) = cos(p / f).
* llama3 (Meta's reference code): lambda = 2 pi / theta; lambda < L / b: theta; lambda > L / a: theta / f;
  otherwise s = (L / lambda - a) / (b - a), theta' = (1 - s) theta / f + s theta.
* YaRN (Peng et al. 2023, the authors' code): correction dims d(beta) = n ln(L / (2 pi beta)) / (2 ln base);
  lo = floor(d(beta_fast)), hi = ceil(d(beta_slow)) (unrounded without truncate), lo >= 0, hi <= n - 1;
  the ramp r = clamp((i - lo) / (hi - lo), 0, 1) gives theta' = theta (1 - r) + theta r / f (r = 0: pair i
  keeps theta, r = 1: theta / f); cos and sin carry the attention factor (0.1 ln f + 1 by default).
"""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from gpt.embedding import apply_rope, rope_cache
from strategies import seeds
from strategies.configs import rope_scalings

pytestmark = pytest.mark.gpt_internal
U64 = torch.finfo(torch.float64).eps / 2
U32 = torch.finfo(torch.float32).eps / 2
BASES = st.sampled_from([100.0, 10000.0, 500000.0])


def _table(n: int, base: float, scaling, dtype=torch.float64, positions=(1,)):
    cos, sin = rope_cache(torch.tensor(positions), n, base, dtype, scaling)
    return cos.double(), sin.double()


def _freqs(n: int, base: float, scaling) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta' read back from the table at position 1, the table's magnitude sqrt(cos^2 + sin^2))."""
    cos, sin = _table(n, base, scaling)
    return torch.atan2(sin[0], cos[0]), torch.sqrt(cos[0] ** 2 + sin[0] ** 2)


def _theta(n: int, base: float) -> torch.Tensor:
    return base ** (-2 * torch.arange(n // 2, dtype=torch.float64) / n)


def _assert_freqs(got: torch.Tensor, expected: torch.Tensor, base: float, what: str) -> None:
    tol = (math.log(base) + 8) * U64 * expected.abs()
    bad = (got - expected).abs() > tol
    assert not bad.any(), (f"{what}: pairs {bad.nonzero().flatten().tolist()} have theta' "
                           f"{got[bad].tolist()}, the formula gives {expected[bad].tolist()}")


@given(n=st.integers(1, 64).map(lambda h: 2 * h), base=BASES, f=st.sampled_from([1.0, 2.0, 2.5, 8.0, 32.0]),
       positions=st.lists(st.integers(0, 100_000), min_size=1, max_size=8))
def test_linear_scaling_interpolates_positions(n, base, f, positions):
    """cos'(p) == cos(p / f) and sin'(p) == sin(p / f) (angles <= P: error <= (ln base + 6) u P)."""
    cos, sin = _table(n, base, {"type": "linear", "factor": f}, positions=positions)
    ref_cos, ref_sin = rope_cache(torch.tensor(positions, dtype=torch.float64) / f, n, base, torch.float64)
    tol = (math.log(base) + 6) * U64 * (max(positions) + 1)
    assert (cos - ref_cos).abs().max() <= tol and (sin - ref_sin).abs().max() <= tol


@given(n=st.integers(1, 128).map(lambda h: 2 * h), base=BASES, scaling=rope_scalings(("llama3",)))
def test_llama3_frequencies_band_by_band(n, base, scaling):
    """theta'_i equals Meta's llama3 formula in each band (high: theta, low: theta / f, medium: smoothed)."""
    got, magnitude = _freqs(n, base, scaling)
    theta = _theta(n, base)
    f, a, b, L = (scaling[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                       "original_max_position_embeddings"))
    wavelength = 2 * math.pi / theta
    high, low = wavelength < L / b, wavelength > L / a
    s = (L / wavelength - a) / (b - a)
    _assert_freqs(got[high], theta[high], base, "llama3 high-frequency band (kept)")
    _assert_freqs(got[low], theta[low] / f, base, "llama3 low-frequency band (divided by factor)")
    medium = ~high & ~low
    _assert_freqs(got[medium], ((1 - s) * theta / f + s * theta)[medium], base, "llama3 medium band (smoothed)")
    assert torch.allclose(magnitude, torch.ones_like(magnitude), rtol=0, atol=4 * U64), "llama3 scales cos/sin"


@given(n=st.integers(1, 128).map(lambda h: 2 * h), base=BASES, scaling=rope_scalings(("yarn",)))
def test_yarn_frequencies_band_by_band(n, base, scaling):
    """theta'_i equals YaRN's ramp in each band, and |(cos, sin)| is the attention factor."""
    got, magnitude = _freqs(n, base, scaling)
    theta = _theta(n, base)
    f, L = scaling["factor"], scaling["original_max_position_embeddings"]
    d = lambda beta: n * math.log(L / (2 * math.pi * beta)) / (2 * math.log(base))  # noqa: E731
    lo, hi = d(scaling["beta_fast"]), d(scaling["beta_slow"])
    if scaling["truncate"]:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, n - 1)
    i = torch.arange(n // 2, dtype=torch.float64)
    ramp = ((i - lo) / ((hi + 0.001 if lo == hi else hi) - lo)).clamp(0, 1)
    keep, interpolate = ramp == 0, ramp == 1
    _assert_freqs(got[keep], theta[keep], base, f"yarn pairs with ramp 0 (lo={lo}: theta kept)")
    _assert_freqs(got[interpolate], theta[interpolate] / f, base, f"yarn pairs with ramp 1 (hi={hi}: theta / f)")
    middle = ~keep & ~interpolate
    _assert_freqs(got[middle], (theta * (1 - ramp) + theta * ramp / f)[middle], base, "yarn ramp")
    factor = scaling["attention_factor"]
    factor = (0.1 * math.log(f) + 1.0 if f > 1 else 1.0) if factor is None else factor
    assert torch.allclose(magnitude, torch.full_like(magnitude, factor), rtol=4 * U64, atol=0), \
        f"yarn table magnitude {magnitude.tolist()} != attention factor {factor}"


@given(data=st.data())
def test_scaled_tables_are_accurate_in_low_precision(data):
    """|apply_rope_d(x, p) - m R(p theta'_exact) x| <= (u_d + (1 + u_d) delta) m |pair| + subnormal / 2 for
    every position p up to the scaled context f L, in float32 and bfloat16 models; the exact rotation is the
    float64 table (within 1e-12 of exact at these positions; its frequencies are checked against the
    formulas above), m the attention factor, delta = (P (ln base + 3) + 5) u_32 (the bound of
    test_gpt_rope_precision: the table is computed in float32 from frequencies rounded once, plus one u_32
    for multiplying cos and sin by m)."""
    n = 2 * data.draw(st.integers(1, 32), label="pairs")
    base = data.draw(BASES, label="base")
    scaling = data.draw(rope_scalings(("linear", "llama3", "yarn")), label="scaling")
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16]), label="dtype")
    L = scaling.get("original_max_position_embeddings", 4096)
    largest = int(min(scaling["factor"] * L, 2 ** 17))
    g = torch.Generator().manual_seed(data.draw(seeds(), label="tensor seed"))
    pos = torch.randint(0, largest, (8,), generator=g)
    pos[-1] = largest - 1
    x = torch.randn(2, 3, 8, n, generator=g, dtype=torch.float64).to(dtype)
    from gpt.config import Config

    normalised = Config(position_embedding="rope", n_embd=n, n_head=1, rope_scaling=scaling).rope_scaling
    out = apply_rope(x, *rope_cache(pos, n, base, dtype, normalised))
    cos64, sin64 = rope_cache(pos, n, base, torch.float64, normalised)  # float64: within 1e-12 of exact
    h = n // 2
    x1, x2 = x.double()[..., :h], x.double()[..., h:]
    exact = torch.cat([x1 * cos64 - x2 * sin64, x2 * cos64 + x1 * sin64], dim=-1)
    m = (cos64[0] ** 2 + sin64[0] ** 2).sqrt().max().item()
    u = torch.finfo(dtype).eps / 2
    delta = ((largest - 1) * (math.log(base) + 3) + 5) * U32 + 1e-12
    r = torch.sqrt(x1 * x1 + x2 * x2).repeat(1, 1, 1, 2)
    bound = (u + (1 + u) * delta) * m * r + torch.finfo(dtype).smallest_normal * u
    err = (out.double() - exact).abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (f"{dtype} {scaling['type']} table at positions <= {largest - 1}: error "
                                  f"{err.flatten()[worst]:.3e} exceeds {bound.flatten()[worst]:.3e}")
