"""Shared by the GPU property modules: the device, and the attention kernels that apply on it."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from gpt.attention import attend, flash_attention, flash_available
from gpt.mask_spec import MaskSpec

SDPA_KERNELS = ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn")
COMPILED_KERNELS = ("flash-attn", "flex")  # JIT-compiled per shape class: seconds per new example
KERNELS = SDPA_KERNELS + COMPILED_KERNELS
VARIANT_KERNELS = ("flash-attn", "flex")  # the kernels that take windows and soft-caps (flex also sinks)


class NotApplicable(Exception):
    """The kernel refuses this shape or dtype (e.g. a head size it has no tile for)."""


def device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return torch.device("cuda", torch.cuda.current_device())


def run_kernel(kernel: str, q, k, v, window=None, softcap=None, sinks=None):
    """Causal attention (B, nh, T, hs) through one named kernel, raising NotApplicable where it refuses;
    ``window``, ``softcap`` and ``sinks`` as in gpt.attention.attend (flash-attn and flex only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kernel == "flex":
        try:
            return attend(q, k, v, MaskSpec.causal(q.size(-2), q.device, window), 0.0, "flex", softcap, sinks)
        except Exception as e:  # flex/inductor refusals of a head size: "not supported", "must be" ...
            msg = str(e)
            # inductor's "NoValidChoicesError: No choices to select": no template config for this shape
            if "not supported" in msg.lower() or "must be" in msg or "power of 2" in msg \
                    or "NoValidChoicesError" in msg:
                raise NotApplicable(msg) from e
            raise
    if kernel == "flash-attn":
        if not flash_available():
            pytest.skip("flash-attn is not installed (pip install flash-attn, or FA4's flash_attn.cute)")
        try:
            return flash_attention(q, k, v, 0.0, 1 / math.sqrt(q.size(-1)), window=window, softcap=softcap,
                                   sinks=sinks)
        except (RuntimeError, AssertionError, ValueError, NotImplementedError) as e:
            # only the kernels' own shape refusals (FA4: "... is not supported on SM90", FA2: "only supports
            # head dimension ...") and our guard against FA4's wrong gradients; anything else is a failure
            msg = str(e)
            if "not supported" in msg or "only supports" in msg or "fa4_backward_is_trusted" in msg \
                    or "does not support attention sinks" in msg:
                raise NotApplicable(msg) from e
            raise
    backend = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
               "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION}[kernel]
    try:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.size(1) != q.size(1))
    except RuntimeError as e:
        if "No available kernel" in str(e) or "not supported" in str(e).lower():
            raise NotApplicable(str(e)) from e
        raise


def compiled_examples() -> int:
    """Examples per property for the compiled kernels: a quarter of the profile's (ci 5, nightly 100), at
    least 5. Each new shape class costs a kernel compilation of seconds, while SDPA's kernels are ready-made."""
    from hypothesis import settings

    return max(5, settings.default.max_examples // 4)


def math_attention(q, k, v, window=None, softcap=None, sinks=None):
    return attend(q, k, v, MaskSpec.causal(q.size(-2), q.device, window), 0.0, "math", softcap, sinks)
