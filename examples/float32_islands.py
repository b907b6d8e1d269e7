"""A correct Llama-style model with float32 islands, as litgpt, torchtune and transformers write them: its
RMSNorm statistics and its RoPE table are computed in float32 even in a float64 model. It declares them
(``float32_islands``), so the exactness properties bound it by float32's unit roundoff through the same
chain as float64's (properties.harness.reordering_tol) and it passes; a planted bug is still caught.

    pytest --subject examples.float32_islands:IslandSubject      # passes
    pytest --subject examples.float32_islands:BuggyIslandSubject # causal mask off by one: fails causality
    pytest --subject examples.float32_islands:UndeclaredSubject  # islands not declared: RoPE relativity
                                                                 # fails by float32 angle rounding
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from properties.subject import Subject
from strategies.space import ConfigSpace


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()  # the float32 island: statistics in float32 whatever the model dtype
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope(x: Tensor, base: float, start: int) -> Tensor:
    """Rotate-half RoPE at positions start.. with a float32 cos/sin table (the second island)."""
    T, hs = x.size(-2), x.size(-1)
    inv = base ** (-torch.arange(0, hs, 2, dtype=torch.float32) / hs)
    angles = torch.outer(torch.arange(start, start + T, dtype=torch.float32), inv)  # (T, hs/2)
    cos, sin = angles.cos().repeat(1, 2).to(x.dtype), angles.sin().repeat(1, 2).to(x.dtype)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, c, mask_offset: int) -> None:
        super().__init__()
        self.c, self.mask_offset = c, mask_offset
        self.norm_1, self.norm_2 = RMSNorm(c.n_embd, c.norm_eps), RMSNorm(c.n_embd, c.norm_eps)
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.gate_up = nn.Linear(c.n_embd, 2 * c.intermediate_size, bias=False)
        self.down = nn.Linear(c.intermediate_size, c.n_embd, bias=False)

    def forward(self, x: Tensor, start: int) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm_1(x)).view(B, T, 3, self.c.n_head, self.c.head_size).permute(2, 0, 3, 1, 4)
        q, k = rope(q, self.c.rope_base, start), rope(k, self.c.rope_base, start)  # (B, nh, T, hs)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.c.head_size)
        future = torch.ones(T, T, dtype=torch.bool).triu(1 + self.mask_offset)  # offset 0: the causal mask
        y = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        gate, up = self.gate_up(self.norm_2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class IslandGPT(nn.Module):
    def __init__(self, c, mask_offset: int = 0) -> None:
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c, mask_offset) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.n_embd, c.norm_eps)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)

    def forward(self, idx: Tensor, input_pos: int = 0) -> Tensor:
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, input_pos)
        return self.head(self.norm(x))


class IslandSubject(Subject):
    name = "float32-islands"
    capabilities = frozenset({"positions"})  # RoPE relativity: where float32 angles p * theta show
    float32_islands = frozenset({"rmsnorm", "rope"})
    space = ConfigSpace(positions=("rope",), norms=("RMSNorm",), mlps=("LLaMAMLP",), backends=("sdpa",),
                        bias=(False,), attn_bias=(False,), parallel_residual=(False,),
                        shared_attention_norm=(False,), gqa=False, free_head_size=False, partial_rotary=False,
                        odd_rotary=False)
    mask_offset = 0

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        torch.manual_seed(seed)
        return IslandGPT(config, self.mask_offset).to(device=device, dtype=dtype)


class BuggyIslandSubject(IslandSubject):
    """The planted bug: the mask lets each position see the next token (triu(2) instead of triu(1))."""

    name = "float32-islands-causal-bug"
    mask_offset = 1


class UndeclaredSubject(IslandSubject):
    """The correct model without its declaration: judged by float64 bounds, its islands are false alarms."""

    name = "float32-islands-undeclared"
    float32_islands = frozenset()
