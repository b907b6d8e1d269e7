"""RoPE context extension: linear position interpolation, Llama 3 frequency bands and YaRN.

``Config.rope_scaling`` is None or a dict with ``"type"`` and that type's parameters; every parameter
gets its default here, so two configs that mean the same scaling compare equal:

* ``linear``: ``factor`` f. theta'_i = theta_i / f, i.e. cos'(p) = cos(p / f) (Chen et al. 2023).
* ``llama3``: ``factor`` f, ``low_freq_factor`` a, ``high_freq_factor`` b (> a),
  ``original_max_position_embeddings`` L. With wavelength lambda_i = 2 pi / theta_i: lambda < L / b keeps
  theta_i, lambda > L / a divides it by f, and in between s = (L / lambda - a) / (b - a) interpolates,
  theta' = (1 - s) theta / f + s theta (Meta's llama3 reference code, as transformers').
* ``yarn``: ``factor`` f, ``beta_fast`` (32), ``beta_slow`` (1), L, ``attention_factor`` (None:
  0.1 ln f + 1), ``truncate`` (True). The correction dimensions d(beta) = n ln(L / (2 pi beta)) / (2 ln base)
  of beta_fast and beta_slow (floored and ceiled when ``truncate``, clamped to [0, n - 1]) bound a ramp
  linear in the pair index i; theta' = theta (1 - g) / f + theta g with g = 1 - clamp((i - lo) / (hi - lo))
  (Peng et al. 2023, the authors' reference code, as transformers and vLLM), and cos and sin are
  multiplied by the attention factor, scaling every attention logit by its square.

The scaled frequencies are computed in the dtype of the unscaled ones, which ``rope_cache`` makes float32
or float64, never the model's low-precision dtype.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

ROPE_SCALINGS = ("linear", "llama3", "yarn")
_DEFAULTS = {
    "linear": dict(factor=None),
    "llama3": dict(factor=None, low_freq_factor=None, high_freq_factor=None, original_max_position_embeddings=None),
    "yarn": dict(factor=None, beta_fast=32.0, beta_slow=1.0, original_max_position_embeddings=None,
                 attention_factor=None, truncate=True),
}


def normalise_rope_scaling(scaling: Any) -> Optional[dict]:
    """The canonical dict (every parameter present, floats as floats), or None for no scaling.

    Raises TypeError / ValueError naming ``Config.rope_scaling`` and the parameter at fault."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise TypeError(f"Config.rope_scaling must be None or a dict with a 'type', got {scaling!r}")
    kind = scaling.get("type")
    if kind in (None, "none", "default") and set(scaling) <= {"type"}:
        return None
    if kind not in ROPE_SCALINGS:
        raise ValueError(f"Config.rope_scaling['type'] must be one of {ROPE_SCALINGS}, got {kind!r}")
    unknown = set(scaling) - set(_DEFAULTS[kind]) - {"type"}
    if unknown:
        raise ValueError(f"Config.rope_scaling of type {kind!r} has unknown parameters {sorted(unknown)}; "
                         f"allowed: {sorted(_DEFAULTS[kind])}")
    out: dict = {"type": kind}
    for name, default in _DEFAULTS[kind].items():
        value = scaling.get(name, default)
        where = f"Config.rope_scaling[{name!r}]"
        if name == "truncate":
            if not isinstance(value, bool):
                raise TypeError(f"{where} must be a bool, got {value!r}")
        elif name == "original_max_position_embeddings":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where} must be an int >= 1, got {value!r}")
        elif value is not None or name != "attention_factor":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{where} must be a finite number, got {value!r}")
            value = float(value)
            low = 1.0 if name == "factor" else 0.0
            if value < low or (value == 0.0 and low == 0.0):
                raise ValueError(f"{where} must be {'>= 1' if low else '> 0'}, got {value}")
        out[name] = value
    if kind == "llama3" and not out["high_freq_factor"] > out["low_freq_factor"]:
        raise ValueError(f"Config.rope_scaling['high_freq_factor'] ({out['high_freq_factor']}) must exceed "
                         f"low_freq_factor ({out['low_freq_factor']})")
    if kind == "yarn" and not out["beta_fast"] > out["beta_slow"]:
        raise ValueError(f"Config.rope_scaling['beta_fast'] ({out['beta_fast']}) must exceed "
                         f"beta_slow ({out['beta_slow']})")
    return out


def yarn_attention_factor(scaling: dict) -> float:
    """The YaRN cos/sin multiplier: the given one, else 0.1 ln f + 1 (1 for f <= 1)."""
    if scaling["attention_factor"] is not None:
        return scaling["attention_factor"]
    return 1.0 if scaling["factor"] <= 1 else 0.1 * math.log(scaling["factor"]) + 1.0


def yarn_correction_range(scaling: dict, n_elem: int, base: float) -> tuple[float, float]:
    """(lo, hi): the pair indices where the YaRN ramp starts and ends (see the module docstring)."""
    L = scaling["original_max_position_embeddings"]

    def dim(rotations: float) -> float:  # the pair index whose wavelength fits `rotations` times in L
        return n_elem * math.log(L / (rotations * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = dim(scaling["beta_fast"]), dim(scaling["beta_slow"])
    if scaling["truncate"]:
        lo, hi = math.floor(lo), math.ceil(hi)
    return max(lo, 0), min(hi, n_elem - 1)


def scale_frequencies(inv_freq: Tensor, n_elem: int, base: float, scaling: Optional[dict]) -> tuple[Tensor, float]:
    """(scaled inverse frequencies in inv_freq's dtype, cos/sin multiplier) for ``inv_freq`` (half,)."""
    if scaling is None:
        return inv_freq, 1.0
    f = scaling["factor"]
    if scaling["type"] == "linear":
        return inv_freq / f, 1.0
    if scaling["type"] == "llama3":
        L, a, b = scaling["original_max_position_embeddings"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        s = (L / wavelen - a) / (b - a)  # 0 at the low-frequency edge L / a, 1 at the high one L / b
        smoothed = (1 - s) * inv_freq / f + s * inv_freq
        scaled = torch.where(wavelen > L / a, inv_freq / f, smoothed)
        return torch.where(wavelen < L / b, inv_freq, scaled), 1.0
    lo, hi = yarn_correction_range(scaling, n_elem, base)
    if lo == hi:
        hi += 0.001  # as the reference code: a one-index ramp instead of a division by zero
    ramp = ((torch.arange(inv_freq.numel(), dtype=inv_freq.dtype, device=inv_freq.device) - lo) / (hi - lo))
    keep = 1 - ramp.clamp(0, 1)  # 1: extrapolate (keep theta, high frequencies), 0: interpolate (theta / f)
    return inv_freq / f * (1 - keep) + inv_freq * keep, yarn_attention_factor(scaling)
