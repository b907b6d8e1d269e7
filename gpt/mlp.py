"""Feed-forward blocks: GPT-NeoX (fc -> GELU -> proj), LLaMA (SwiGLU) and Gemma (GeGLU)."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class GptNeoxMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)
        self.approximate = config.gelu_approximate

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class LLaMAMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)  # gate
        self.fc_2 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)  # up
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def activation(self, gate: Tensor) -> Tensor:
        return F.silu(gate)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.activation(self.fc_1(x)) * self.fc_2(x))


class GemmaMLP(LLaMAMLP):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.approximate = config.gelu_approximate

    def activation(self, gate: Tensor) -> Tensor:
        return F.gelu(gate, approximate=self.approximate)


def build_mlp(config) -> nn.Module:
    if config.mlp_class_name == "MoE":
        from .moe import MoE

        return MoE(config)
    return {"GptNeoxMLP": GptNeoxMLP, "LLaMAMLP": LLaMAMLP, "GemmaMLP": GemmaMLP}[config.mlp_class_name](config)
