"""Verify your own model: a small GPT written independently of ``gpt/``, checked by the property suite.

Two ways to point the suite at it::

    pytest -n auto --subject examples.own_model:make          # factory make(config) -> nn.Module
    pytest -n auto --subject examples.own_model:OwnSubject    # a Subject: capabilities and a config space

``make(config)`` only has to return a module mapping (B, T) token ids to (B, T, vocab_size) logits for
every config the default space draws (``strategies.ConfigSpace``); the properties that need nothing more
run, the others skip. ``OwnSubject`` also declares capabilities (KV-cache decoding, explicit positions,
input embeddings, dropout, GPT-2 init scale, a closed-form parameter count, padding masks, per-row positions,
packed sequences, batched generation) and implements their methods;
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
    rot = torch.polar(torch.ones_like(theta), pos.double()[..., None] * theta)  # (T, h) or (B, T, h)
    if rot.dim() == 3:
        rot = rot[:, None]  # (B, 1, T, h): per-row positions, shared by the heads
    z = torch.complex(x[..., :h].double(), x[..., h : 2 * h].double()) * rot
    return torch.cat([z.real.to(x.dtype), z.imag.to(x.dtype), x[..., 2 * h :]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.qkv = nn.Linear(c.n_embd, (c.n_head + 2 * c.n_query_groups) * c.head_size, bias=c.bias or c.attn_bias)
        self.out = nn.Linear(c.n_head * c.head_size, c.n_embd, bias=c.bias)
        self.drop = nn.Dropout(c.attn_dropout)
        # keys, values, and per key column: is it a real token (not padding), which segment
        self.cache: Optional[tuple[Tensor, Tensor, Tensor]] = None

    def forward(self, x: Tensor, pos: Tensor, use_cache: bool, real: Tensor, seg: Tensor) -> Tensor:
        """``pos`` (T,) or (B, T) rotary positions; ``real`` and ``seg`` (B, T) padding flags and segment ids.
        Causality is by column (a key column <= the query's), never by position."""
        c, (B, T, _) = self.c, x.shape
        q, k, v = self.qkv(x).split([c.n_head * c.head_size, c.n_query_groups * c.head_size,
                                     c.n_query_groups * c.head_size], dim=-1)
        q = q.view(B, T, c.n_head, c.head_size).transpose(1, 2)
        k = k.view(B, T, c.n_query_groups, c.head_size).transpose(1, 2)
        v = v.view(B, T, c.n_query_groups, c.head_size).transpose(1, 2)
        if c.position_embedding == "rope":
            q, k = rotate(q, pos, c.rope_n_elem, c.rope_base), rotate(k, pos, c.rope_n_elem, c.rope_base)
        key_real = real
        if use_cache:  # append this chunk to the cache and attend over everything cached
            if self.cache is not None:
                k, v = torch.cat([self.cache[0], k], dim=2), torch.cat([self.cache[1], v], dim=2)
                key_real = torch.cat([self.cache[2], real], dim=1)
            self.cache = (k, v, key_real)
        S = k.size(2)
        q_col = torch.arange(S - T, S, device=x.device)  # columns of this chunk among the S keys
        k_col = torch.arange(S, device=x.device)
        key_seg = seg if S == T else torch.zeros(B, S, dtype=seg.dtype, device=x.device)  # no packing with a cache
        blocked = (k_col[None, None, :] > q_col[None, :, None]) | ~key_real[:, None, :] \
            | (key_seg[:, None, :] != seg[:, :, None])  # (B, T, S)
        groups = c.n_head // c.n_query_groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_size)
        scores = scores.masked_fill(blocked[:, None], float("-inf"))
        # a query with every key blocked (padding with no real token before it) would be 0/0: make it 0
        y = self.drop(scores.softmax(-1).nan_to_num(0.0)) @ v
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

    def forward(self, x: Tensor, pos: Tensor, use_cache: bool, real: Tensor, seg: Tensor) -> Tensor:
        h = self.norm_1(x)
        a = self.drop(self.attn(h, pos, use_cache, real, seg))
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
                use_cache: bool = False, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, segment_ids: Optional[Tensor] = None) -> Tensor:
        """``attention_mask`` is (B, T), or with ``use_cache`` (B, input_pos + T) over cached and current
        tokens; positions default to the count of real tokens before each one (restarting per segment)."""
        x = self.tok(idx) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        real = torch.ones(B, T, dtype=torch.bool, device=x.device)
        seg = torch.zeros(B, T, dtype=torch.long, device=x.device) if segment_ids is None else segment_ids
        pos = torch.arange(input_pos, input_pos + T, device=x.device)
        if attention_mask is not None:
            seen = attention_mask.bool()
            real = seen[:, -T:]
            pos = (seen.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        if segment_ids is not None:  # index of each token within its segment
            same_before = (segment_ids[:, :, None] == segment_ids[:, None, :]).tril().sum(-1)  # (B, T)
            pos = same_before - 1
        if position_ids is not None:
            pos = position_ids
        if self.pos is not None:
            x = x + self.pos(pos)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, pos, use_cache, real, seg)
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
                              "attention_mask", "position_ids", "packing", "batched_generation",
                              "reference_weights", "residual_projections"})
    space = ConfigSpace(backends=("sdpa",))  # one attention implementation; every architecture axis
    weight_map = WEIGHTS

    def residual_projections(self, model):
        return [n for n, _ in model.named_parameters() if n.endswith((".attn.out.weight", ".attn.out.bias",
                                                                    ".mlp.down.weight", ".mlp.down.bias"))]

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        torch.manual_seed(seed)
        return OwnGPT(config).to(device=device, dtype=dtype)

    def logits(self, model, idx, input_pos=None, *, attention_mask=None, position_ids=None):
        return model(idx, input_pos=input_pos or 0, attention_mask=attention_mask, position_ids=position_ids)

    def logits_packed(self, model, idx, segment_ids):
        return model(idx, segment_ids=segment_ids)

    @torch.no_grad()
    def generate_greedy(self, model, idx, max_new_tokens, attention_mask=None):
        self.reset_cache(model, idx.size(0), idx.size(1) + max_new_tokens)
        mask = torch.ones_like(idx) if attention_mask is None else attention_mask.long()
        out, nxt, pos = idx, idx, 0
        for _ in range(max_new_tokens):
            logits = model(nxt, input_pos=pos, use_cache=True, attention_mask=mask)
            pos += nxt.size(1)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out, mask = torch.cat([out, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
        return out

    def reset_cache(self, model, batch_size, max_seq_length):
        for block in model.blocks:
            block.attn.cache = None

    def decode(self, model, idx, input_pos, *, attention_mask=None):
        return model(idx, input_pos=input_pos, use_cache=True, attention_mask=attention_mask)

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
