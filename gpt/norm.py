"""Normalisation layers: LayerNorm (torch's) and RMSNorm."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension (Zhang & Sennrich 2019).

    Statistics are taken in float32 for low-precision inputs, as Llama does.
    """

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def build_norm(config, present: bool = True) -> nn.Module:
    """The block/final norm of ``config``; nn.Identity() where ``present`` is False (a norm this
    placement does not have)."""
    if not present:
        return nn.Identity()
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def build_qk_norms(config) -> tuple[nn.Module, nn.Module]:
    """RMSNorms for queries and keys (always RMSNorm, as every model with QK-norm): over each head's
    head_size features ("per_head") or over the whole projection of all heads ("all_heads", OLMo 2)."""
    if config.qk_norm == "none":
        return nn.Identity(), nn.Identity()
    if config.qk_norm == "per_head":
        return RMSNorm(config.head_size, config.norm_eps), RMSNorm(config.head_size, config.norm_eps)
    return (RMSNorm(config.n_head * config.head_size, config.norm_eps),
            RMSNorm(config.n_query_groups * config.head_size, config.norm_eps))


def qk_normed(norm: nn.Module, x: Tensor, scope: str) -> Tensor:
    """Queries or keys x (B, h, T, hs) normalised over each head's hs features ("per_head") or over all
    h * hs features of a position ("all_heads")."""
    if scope == "per_head":
        return norm(x)
    B, h, T, hs = x.shape
    return norm(x.transpose(1, 2).reshape(B, T, h * hs)).view(B, T, h, hs).transpose(1, 2)  # (B, h, T, hs)
