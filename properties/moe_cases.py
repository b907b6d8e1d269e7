"""What the MoE properties share: a drawn MoE layer with a float64 input, and its routing measured from
outside (which experts each token reaches, with which weight) without reading the module's own bookkeeping."""
from __future__ import annotations

import torch
from hypothesis import note
from torch import nn

from properties.harness import draw_config
from strategies import seeds


def draw_moe(data, subject, **fixed):
    """(config, moe, x): an MoE config from the subject's space, its float64 ``gpt.moe.MoE`` built from a
    drawn seed, and an input x ~ N(0, 1) of shape (B, T, n_embd)."""
    from gpt.moe import MoE

    config = draw_config(data, subject, mlp_class_name="MoE", **fixed)
    seed = data.draw(seeds(), label="seed")
    B, T = data.draw(st_int(1, 3), label="B"), data.draw(st_int(1, 4), label="T")
    note(f"rebuild: torch.manual_seed({seed}); MoE({config!r}).double(); x = randn({B}, {T}, n_embd)")
    torch.manual_seed(seed)
    moe = MoE(config).double()
    # router rows of norm ~1 so that the router's scores are spread; the default 0.02 init is kept elsewhere
    nn.init.normal_(moe.router.weight, std=1.0 / config.n_embd**0.5)
    x = torch.randn(B, T, config.n_embd, dtype=torch.float64)
    return config, moe, x


def st_int(lo: int, hi: int):
    from hypothesis import strategies as st

    return st.integers(lo, hi)


class _Marker(nn.Module):
    """An expert whose output is 1 in every feature when ``on``, else 0."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def forward(self, rows):
        return rows.new_full(rows.shape, float(self.on))


@torch.no_grad()
def routing_matrix(moe, x) -> torch.Tensor:
    """W (N, E): the weight the layer gives expert e for token n (flattened (B, T)), measured by swapping
    in marker experts and switching on one at a time (shared expert off): out_n = W[n, e] * 1."""
    experts, shared = moe.experts, moe.shared
    markers = nn.ModuleList(_Marker() for _ in experts)
    moe.experts, moe.shared = markers, None
    try:
        cols = []
        for m in markers:
            m.on = True
            cols.append(moe(x).reshape(-1, x.size(-1))[:, 0])
            m.on = False
    finally:
        moe.experts, moe.shared = experts, shared
    return torch.stack(cols, dim=-1)  # (N, E)


def router_probs(moe, x) -> torch.Tensor:
    """p = softmax(W_r x) over the experts, (N, E), computed here from the router weight."""
    z = x.reshape(-1, x.size(-1)) @ moe.router.weight.T  # (N, E)
    return torch.softmax(z, dim=-1)
