"""Verify your own model: a small GPT written independently of ``gpt/``, checked by the property suite.

Two ways to point the suite at it::

    pytest -n auto --subject examples.own_model:make          # factory make(config) -> nn.Module
    pytest -n auto --subject examples.own_model:OwnSubject    # a Subject: capabilities and a config space

``make(config)`` only has to return a module mapping (B, T) token ids to (B, T, vocab_size) logits for
every config the default space draws (``strategies.ConfigSpace``); the properties that need nothing more
run, the others skip. ``OwnSubject`` also declares capabilities (KV-cache decoding, explicit positions,
input embeddings, dropout, GPT-2 init scale, a closed-form parameter count) and implements their methods;
narrow ``space`` to what your model supports (e.g. ``ConfigSpace(positions=("rope",), gqa=False)``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gpt.config import Config
from properties.subject import Subject
from properties.weight_map import WeightMap, fused_gate_up, rename, vocab
from strategies.space import ConfigSpace


class Norm(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.rms, self.eps = c.norm_class_name == "RMSNorm", c.norm_eps
        self.weight = nn.Parameter(torch.ones(c.n_embd))
        self.bias = nn.Parameter(torch.zeros(c.n_embd)) if c.bias and not self.rms else None

    def forward(self, x: Tensor) -> Tensor:
        if self.rms:
            return self.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + self.eps)
        return self.weight * x + (0 if self.bias is None else self.bias)


def rotate(x: Tensor, pos: Tensor, n_elem: int, base: float) -> Tensor:
    """RoPE as complex multiplication: (x_i + j x_{i+h}) e^{j p base^(-2i/n)} for i < h = n_elem // 2."""
    h = n_elem // 2
    theta = base ** (-2 * torch.arange(h, dtype=torch.float64, device=x.device) / n_elem)
    rot = torch.polar(torch.ones_like(theta), pos.double()[:, None] * theta)  # (T, h)
    z = torch.complex(x[..., :h].double(), x[..., h : 2 * h].double()) * rot
    return torch.cat([z.real.to(x.dtype), z.imag.to(x.dtype), x[..., 2 * h :]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.qkv = nn.Linear(c.n_embd, (c.n_head + 2 * c.n_query_groups) * c.head_size, bias=c.bias or c.attn_bias)
        self.out = nn.Linear(c.n_head * c.head_size, c.n_embd, bias=c.bias)
        self.drop = nn.Dropout(c.attn_dropout)
        self.cache: Optional[tuple[Tensor, Tensor]] = None  # keys and values of the positions seen so far

    def forward(self, x: Tensor, pos: Tensor, use_cache: bool) -> Tensor:
        c, (B, T, _) = self.c, x.shape
        q, k, v = self.qkv(x).split([c.n_head * c.head_size, c.n_query_groups * c.head_size,
                                     c.n_query_groups * c.head_size], dim=-1)
        q = q.view(B, T, c.n_head, c.head_size).transpose(1, 2)
        k = k.view(B, T, c.n_query_groups, c.head_size).transpose(1, 2)
        v = v.view(B, T, c.n_query_groups, c.head_size).transpose(1, 2)
        if c.position_embedding == "rope":
            q, k = rotate(q, pos, c.rope_n_elem, c.rope_base), rotate(k, pos, c.rope_n_elem, c.rope_base)
        key_pos = pos
        if use_cache:  # append this chunk to the cache and attend over everything cached
            if self.cache is not None:
                k, v = torch.cat([self.cache[0], k], dim=2), torch.cat([self.cache[1], v], dim=2)
            self.cache = (k, v)
            key_pos = torch.arange(k.size(2), device=x.device)
        groups = c.n_head // c.n_query_groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_size)
        scores = scores.masked_fill(key_pos[None, :] > pos[:, None], float("-inf"))
        y = self.drop(scores.softmax(-1)) @ v
        return self.out(y.transpose(1, 2).reshape(B, T, c.n_head * c.head_size))


class MLP(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.kind, self.approximate = c.mlp_class_name, c.gelu_approximate
        gated = self.kind != "GptNeoxMLP"
        self.up = nn.Linear(c.n_embd, c.intermediate_size * (2 if gated else 1), bias=c.bias)
        self.down = nn.Linear(c.intermediate_size, c.n_embd, bias=c.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.kind == "GptNeoxMLP":
            return self.down(F.gelu(h, approximate=self.approximate))
        gate, up = h.chunk(2, dim=-1)
        act = F.silu(gate) if self.kind == "LLaMAMLP" else F.gelu(gate, approximate=self.approximate)
        return self.down(act * up)


class Block(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.norm_1, self.attn, self.mlp = Norm(c), Attention(c), MLP(c)
        self.norm_2 = None if c.shared_attention_norm else Norm(c)
        self.parallel, self.drop = c.parallel_residual, nn.Dropout(c.resid_dropout)

    def forward(self, x: Tensor, pos: Tensor, use_cache: bool) -> Tensor:
        h = self.norm_1(x)
        a = self.drop(self.attn(h, pos, use_cache))
        if self.parallel:
            return x + a + self.drop(self.mlp(h if self.norm_2 is None else self.norm_2(x)))
        x = x + a
        return x + self.drop(self.mlp(self.norm_2(x)))


class OwnGPT(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.tok = nn.Embedding(c.vocab_size, c.n_embd)  # no vocabulary padding
        self.pos = nn.Embedding(c.block_size, c.n_embd) if c.position_embedding == "learned" else None
        self.drop = nn.Dropout(c.embd_dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = Norm(c)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.head.weight = self.tok.weight
        for m in self.modules():  # GPT-2 style: N(0, 0.02) weights, zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: Optional[Tensor] = None, input_pos: int = 0, inputs_embeds: Optional[Tensor] = None,
                use_cache: bool = False) -> Tensor:
        x = self.tok(idx) if inputs_embeds is None else inputs_embeds
        pos = torch.arange(input_pos, input_pos + x.size(1), device=x.device)
        if self.pos is not None:
            x = x + self.pos(pos)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, pos, use_cache)
        return self.head(self.norm(x))


def make(config: Config) -> nn.Module:
    """The factory: ``pytest --subject examples.own_model:make``."""
    return OwnGPT(config)


# The reference's weights (gpt.GPT's names) in this model's names: the fixed-weight differential loads the
# same weights into both and compares logits, gradients and cached decoding. Our fused qkv is already the
# reference's [q | k | v] and our RoPE its rotate-half pairing, so every rule is a rename, except the gated
# MLP's fused [gate | up] input projection.
_B = "blocks.{i}."
WEIGHTS = WeightMap(
    [vocab("wte.weight", "tok.weight"), rename("wpe.weight", "pos.weight"), vocab("lm_head.weight", "head.weight"),
     *[fused_gate_up(_B + f"mlp.fc_1.{s}", _B + f"mlp.fc_2.{s}", _B + f"mlp.up.{s}") for s in ("weight", "bias")],
     *[rename(_B + f"{ref}.{s}", _B + f"{own}.{s}") for s in ("weight", "bias") for ref, own in (
         ("norm_1", "norm_1"), ("norm_2", "norm_2"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.out"),
         ("mlp.fc", "mlp.up"), ("mlp.proj", "mlp.down"))],
     rename("norm_f.weight", "norm.weight"), rename("norm_f.bias", "norm.bias")])


class OwnSubject(Subject):
    """The same model with capabilities: ``pytest --subject examples.own_model:OwnSubject``."""

    name = "own-model"
    capabilities = frozenset({"kv_cache", "positions", "inputs_embeds", "dropout", "init_scale", "param_count",
                              "reference_weights", "residual_projections"})
    space = ConfigSpace(backends=("sdpa",))  # one attention implementation; every architecture axis
    weight_map = WEIGHTS

    def residual_projections(self, model):
        return [n for n, _ in model.named_parameters() if n.endswith((".attn.out.weight", ".attn.out.bias",
                                                                    ".mlp.down.weight", ".mlp.down.bias"))]

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        torch.manual_seed(seed)
        return OwnGPT(config).to(device=device, dtype=dtype)

    def logits(self, model, idx, input_pos=None):
        return model(idx, input_pos=input_pos or 0)

    def reset_cache(self, model, batch_size, max_seq_length):
        for block in model.blocks:
            block.attn.cache = None

    def decode(self, model, idx, input_pos):
        return model(idx, input_pos=input_pos, use_cache=True)

    def embed(self, model, idx):
        return model.tok(idx)

    def logits_from_embeds(self, model, embeds):
        return model(inputs_embeds=embeds)

    def param_count(self, config):
        C, I, V = config.n_embd, config.intermediate_size, config.vocab_size
        q, kv, b = config.n_head * config.head_size, config.n_query_groups * config.head_size, int(config.bias)
        norm = C * (1 if config.norm_class_name == "RMSNorm" or not config.bias else 2)
        qkv = C * (q + 2 * kv) + (q + 2 * kv) * int(config.bias or config.attn_bias)
        mlp_in = I * (1 if config.mlp_class_name == "GptNeoxMLP" else 2)
        block = norm * (1 if config.shared_attention_norm else 2) + qkv + q * C + C * b + C * mlp_in + mlp_in * b \
            + I * C + C * b
        learned = config.block_size * C if config.position_embedding == "learned" else 0
        return V * C + learned + config.n_layer * block + norm + (0 if config.tie_embeddings else V * C)
