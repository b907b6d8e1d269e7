"""Token and position inputs: learned absolute positions (GPT-2) and rotary embeddings (RoPE)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .rope_scaling import scale_frequencies


def rope_cache(positions: Tensor, n_elem: int, base: float, dtype: torch.dtype,
               scaling: Optional[dict] = None) -> tuple[Tensor, Tensor]:
    """cos and sin of shape (..., n_elem // 2) for integer ``positions`` of any shape (...), e.g. (T,) or (B, T).

    Computed in float64 for a float64 model and in float32 otherwise: the angles reach block_size
    radians, where bfloat16 would keep barely two significant digits. ``scaling`` is a normalised
    ``Config.rope_scaling`` (gpt.rope_scaling): it changes the frequencies, and YaRN scales cos and sin.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    half = n_elem // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=work) * 2 / n_elem)  # (half,)
    if scaling is not None:  # scaled in float64, rounded once: the bands' arithmetic adds no float32 error
        inv_freq, attention_factor = scale_frequencies(inv_freq.double(), n_elem, base, scaling)
        inv_freq = inv_freq.to(work)
    else:
        attention_factor = 1.0
    angles = positions.to(work)[..., None] * inv_freq  # (..., half)
    if attention_factor != 1.0:
        return angles.cos() * attention_factor, angles.sin() * attention_factor
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[i], x[i + half]) of the first 2 * half features of x (B, nh, T, n) by the angles.

    This is the GPT-NeoX / Llama "rotate half" layout. With an odd number of rotary features the last
    one has no partner and passes through unrotated (a zero-frequency pair).
    """
    half = cos.size(-1)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    xf1, xf2 = x1.to(cos.dtype), x2.to(cos.dtype)
    rotated = torch.cat((xf1 * cos - xf2 * sin, xf2 * cos + xf1 * sin), dim=-1).to(x.dtype)
    return torch.cat((rotated, rest), dim=-1)
