"""Mixture of experts: a linear router picks n_experts_per_token of n_experts MLPs for each token.

Routing conventions (``Config.moe_routing``), with router logits z = W_r x (no bias) and p = softmax(z):

* ``softmax_topk``: S = top-k of p, weights w_e = p_e for e in S (Qwen2-MoE / OLMoE with norm_topk_prob=False)
* ``softmax_topk_renorm``: S = top-k of p, w_e = p_e / sum_{j in S} p_j (Mixtral, Qwen3-MoE)
* ``topk_softmax``: S = top-k of z, w = softmax(z_S) (the original Mixtral code); mathematically equal to
  ``softmax_topk_renorm`` (softmax is monotone and renormalising the kept p is the softmax of the kept z).

Ties: among equal scores the lower expert index is picked (a stable descending sort), so routing is a
function of the scores alone. Dropless: every token reaches its k experts (no capacity limit).

y(x) = sum_{e in S(x)} w_e(x) E_e(x) + [g(x)] E_shared(x), with g = sigmoid(w_g . x) when
``shared_expert_gate`` (Qwen2-MoE) and 1 otherwise. Each forward keeps its routing in ``last_routing``
(probabilities p and the chosen experts), which ``load_balancing_loss`` turns into the auxiliary loss.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def route(logits: Tensor, k: int, convention: str) -> tuple[Tensor, Tensor, Tensor]:
    """(weights (N, k), experts (N, k), probabilities (N, E)) for router logits (N, E)."""
    probs = torch.softmax(logits, dim=-1)  # (N, E)
    scores = logits if convention == "topk_softmax" else probs
    experts = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]  # (N, k), ties: lower index
    if convention == "topk_softmax":
        weights = torch.softmax(logits.gather(-1, experts), dim=-1)
    else:
        weights = probs.gather(-1, experts)
        if convention == "softmax_topk_renorm":
            weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts, probs


def _expert(config, width: int) -> nn.Module:
    from .mlp import build_mlp

    return build_mlp(SimpleNamespace(mlp_class_name=config.moe_expert_mlp, n_embd=config.n_embd,
                                     intermediate_size=width, bias=config.bias,
                                     gelu_approximate=config.gelu_approximate))


class MoE(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.k, self.convention = config.n_experts_per_token, config.moe_routing
        self.router = nn.Linear(config.n_embd, config.n_experts, bias=False)
        self.experts = nn.ModuleList(_expert(config, config.moe_intermediate_size) for _ in range(config.n_experts))
        self.shared = _expert(config, config.shared_expert_intermediate_size) if config.n_shared_experts else None
        self.shared_gate = nn.Linear(config.n_embd, 1, bias=False) if config.shared_expert_gate else None
        self.last_routing: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, C), N = B * T: routing is per token
        weights, experts, probs = route(self.router(flat), self.k, self.convention)  # (N, k), (N, k), (N, E)
        self.last_routing = (probs, experts)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(experts == e)  # the tokens that chose e, and in which of their k slots
            if token.numel():
                out = out.index_add(0, token, expert(flat[token]) * weights[token, slot, None])
        if self.shared is not None:
            shared = self.shared(flat)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(flat)) * shared
            out = out + shared
        return out.reshape(shape)


def load_balancing_loss(routings: Sequence[tuple[Tensor, Tensor]], n_experts: int) -> Tensor:
    """Switch Transformer's auxiliary loss (Fedus et al. 2021, eq. 4-6), pooled over layers as transformers does:

    aux = N * sum_i f_i P_i, f_i = (assignments to expert i) / (tokens * k), P_i = mean router probability of i,

    both over all tokens of all MoE layers. f and P each sum to 1; aux == 1 when either is uniform, and
    1 / (tokens * layers) <= aux <= N. transformers' ``load_balancing_loss_func`` counts f_i without the
    1 / k (its f sums to k), so it equals k * aux.
    """
    probs = torch.cat([p for p, _ in routings])  # (L * N, E)
    experts = torch.cat([e for _, e in routings])  # (L * N, k)
    counts = torch.zeros(n_experts, dtype=probs.dtype, device=probs.device)
    counts = counts.index_add(0, experts.reshape(-1), torch.ones(experts.numel(), dtype=probs.dtype,
                                                                 device=probs.device))
    f = counts / experts.numel()  # (E,)
    P = probs.mean(dim=0)  # (E,)
    return n_experts * (f * P).sum()
