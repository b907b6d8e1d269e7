"""One dataclass describes every model the core can build.

Derived fields are computed once in ``__post_init__``; every invalid value or combination raises a
``ValueError`` (or ``TypeError`` for a wrong type) that names the field and the allowed range.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .rope_scaling import normalise_rope_scaling

NORMS = ("LayerNorm", "RMSNorm")
MLPS = ("GptNeoxMLP", "LLaMAMLP", "GemmaMLP")
DENSE_MLPS = MLPS  # the kinds an MoE expert (and a shared expert) may be
MOE_ROUTINGS = ("softmax_topk", "softmax_topk_renorm", "topk_softmax")
POSITIONS = ("learned", "rope")
BACKENDS = ("math", "sdpa", "flash", "flex")
LAYER_TYPES = ("full_attention", "sliding_attention")  # transformers' names for Config.layer_types
GELU_APPROXIMATIONS = ("none", "tanh")
# QK-norm: RMSNorm over each head's features (Qwen3, Gemma 3) or over all heads' projections (OLMo 2)
QK_NORMS = ("none", "per_head", "all_heads")
# where a block's norms sit: before each branch (GPT-2, Llama), before and after (Gemma 2 "sandwich"),
# or only on each branch's output, inside the residual: x + norm(f(x)) (OLMo 2)
NORM_PLACEMENTS = ("pre", "sandwich", "post")


@dataclass(frozen=True)
class Config:
    """Frozen after validation: derive a changed copy with ``config.replace(field=value)`` (re-derived and
    re-validated) rather than assigning to a field."""

    name: str = ""
    # sizes
    vocab_size: int = 50257
    padding_multiple: int = 64
    padded_vocab_size: Optional[int] = None  # derived: vocab_size rounded up to padding_multiple
    block_size: int = 1024
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    head_size: Optional[int] = None  # derived: n_embd // n_head
    n_query_groups: Optional[int] = None  # derived: n_head (MHA); 1 is MQA, in between GQA
    intermediate_size: Optional[int] = None  # derived: 4 * n_embd
    # positions
    position_embedding: Literal["learned", "rope"] = "learned"
    rope_base: float = 10000.0
    rotary_percentage: float = 1.0
    # None, or a dict with "type" in ROPE_SCALINGS and its parameters (see gpt.rope_scaling); normalised
    # in __post_init__ to every parameter filled in. Not hashed (a dict), compared as usual.
    rope_scaling: Optional[dict] = field(default=None, hash=False)
    # blocks
    norm_class_name: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    norm_eps: float = 1e-5
    mlp_class_name: Literal["GptNeoxMLP", "LLaMAMLP", "GemmaMLP", "MoE"] = "GptNeoxMLP"
    # mixture of experts (mlp_class_name="MoE", gpt/moe.py); ignored by dense MLPs
    n_experts: int = 8
    n_experts_per_token: int = 2  # top-k
    moe_routing: Literal["softmax_topk", "softmax_topk_renorm", "topk_softmax"] = "softmax_topk_renorm"
    moe_expert_mlp: Literal["GptNeoxMLP", "LLaMAMLP", "GemmaMLP"] = "LLaMAMLP"
    moe_intermediate_size: Optional[int] = None  # derived: intermediate_size (each routed expert's width)
    n_shared_experts: int = 0  # always-on experts, fused into one MLP of shared_expert_intermediate_size
    shared_expert_intermediate_size: Optional[int] = None  # derived: n_shared_experts * moe_intermediate_size
    shared_expert_gate: bool = False  # Qwen2-MoE: shared output scaled by sigmoid(x . w_gate)
    norm_placement: Literal["pre", "sandwich", "post"] = "pre"
    qk_norm: Literal["none", "per_head", "all_heads"] = "none"  # RMSNorm on queries and keys before RoPE
    gelu_approximate: Literal["none", "tanh"] = "none"
    bias: bool = True
    attn_bias: bool = False  # qkv bias even when ``bias`` is False (Qwen-style)
    parallel_residual: bool = False
    shared_attention_norm: bool = False
    tie_embeddings: bool = True
    # attention variants (Mistral / Gemma 2 / GPT-OSS)
    # query at position i sees keys at positions i - W < j <= i: W keys including itself (transformers' Mistral)
    sliding_window: Optional[int] = None
    layer_types: Optional[tuple] = None  # per layer "full_attention" / "sliding_attention"; None: all sliding if W
    attn_logit_softcap: Optional[float] = None  # c * tanh(s / c) on the scaled scores, before the mask (Gemma 2)
    final_logit_softcap: Optional[float] = None  # c * tanh(z / c) on the output logits (Gemma 2)
    attention_sinks: bool = False  # one learned logit per head in the softmax denominator (GPT-OSS)
    scale_embeddings: bool = False  # token embeddings times sqrt(n_embd) (Gemma)
    # regularisation
    embd_dropout: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    # kernels
    attn_backend: Literal["math", "sdpa", "flash", "flex"] = "sdpa"
    # derived only
    rope_n_elem: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "padding_multiple", "block_size", "n_layer", "n_embd", "n_head"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("padded_vocab_size", "head_size", "n_query_groups", "intermediate_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        for name in ("bias", "attn_bias", "parallel_residual", "shared_attention_norm", "tie_embeddings",
                     "attention_sinks", "shared_expert_gate", "scale_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Config.{name} must be a bool, got {getattr(self, name)!r}")
        _check_choice("position_embedding", self.position_embedding, POSITIONS)
        _check_choice("norm_class_name", self.norm_class_name, NORMS)
        _check_choice("mlp_class_name", self.mlp_class_name, MLPS + ("MoE",))
        _check_choice("gelu_approximate", self.gelu_approximate, GELU_APPROXIMATIONS)
        _check_choice("moe_routing", self.moe_routing, MOE_ROUTINGS)
        _check_choice("moe_expert_mlp", self.moe_expert_mlp, DENSE_MLPS)
        _check_int("n_experts", self.n_experts, low=1)
        _check_int("n_shared_experts", self.n_shared_experts, low=0)
        _check_int("n_experts_per_token", self.n_experts_per_token, low=1)
        if self.n_experts_per_token > self.n_experts:
            raise ValueError(f"Config.n_experts_per_token must be in [1, n_experts={self.n_experts}], "
                             f"got {self.n_experts_per_token}")
        for name in ("moe_intermediate_size", "shared_expert_intermediate_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        _check_choice("attn_backend", self.attn_backend, BACKENDS)
        _check_choice("qk_norm", self.qk_norm, QK_NORMS)
        _check_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        if self.norm_placement != "pre" and self.parallel_residual:
            raise ValueError(f"Config.norm_placement={self.norm_placement!r} requires parallel_residual=False")
        for name in ("embd_dropout", "attn_dropout", "resid_dropout"):
            p = _check_float(name, getattr(self, name))
            if not 0.0 <= p < 1.0:
                raise ValueError(f"Config.{name} must be in [0, 1), got {p}")
        if _check_float("norm_eps", self.norm_eps) <= 0:
            raise ValueError(f"Config.norm_eps must be > 0, got {self.norm_eps}")
        if _check_float("rope_base", self.rope_base) <= 1:
            raise ValueError(f"Config.rope_base must be > 1, got {self.rope_base}")
        if not 0.0 < _check_float("rotary_percentage", self.rotary_percentage) <= 1.0:
            raise ValueError(f"Config.rotary_percentage must be in (0, 1], got {self.rotary_percentage}")

        padded = _round_up(self.vocab_size, self.padding_multiple)
        if self.padded_vocab_size is None:
            self._derive('padded_vocab_size', padded)
        elif self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"Config.padded_vocab_size must be >= vocab_size ({self.vocab_size}), got {self.padded_vocab_size}"
            )
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ValueError(
                    f"Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) "
                    "unless head_size is given"
                )
            self._derive('head_size', self.n_embd // self.n_head)
        if self.n_query_groups is None:
            self._derive('n_query_groups', self.n_head)
        if not (self.n_query_groups <= self.n_head and self.n_head % self.n_query_groups == 0):
            raise ValueError(
                f"Config.n_query_groups must divide n_head ({self.n_head}) and be in [1, {self.n_head}], "
                f"got {self.n_query_groups}"
            )
        if self.intermediate_size is None:
            self._derive('intermediate_size', 4 * self.n_embd)
        self._check_attention_variants()
        if self.moe_intermediate_size is None:
            self._derive('moe_intermediate_size', self.intermediate_size)
        if self.shared_expert_intermediate_size is None:
            self._derive('shared_expert_intermediate_size', max(1, self.n_shared_experts * self.moe_intermediate_size))
        if self.shared_expert_gate and not self.n_shared_experts:
            raise ValueError("Config.shared_expert_gate=True requires n_shared_experts >= 1")
        if self.shared_attention_norm and not self.parallel_residual:
            raise ValueError("Config.shared_attention_norm=True requires parallel_residual=True")
        if self.position_embedding == "rope":
            self._derive('rope_n_elem', int(self.rotary_percentage * self.head_size))
            if self.rope_n_elem < 2:
                raise ValueError(
                    f"Config.rotary_percentage ({self.rotary_percentage}) x head_size ({self.head_size}) "
                    f"must rotate at least 2 elements, got {self.rope_n_elem}"
                )
        else:
            self._derive('rope_n_elem', 0)
        if self.rope_scaling is not None and self.position_embedding != "rope":
            raise ValueError("Config.rope_scaling requires position_embedding='rope'")
        self._derive('rope_scaling', normalise_rope_scaling(self.rope_scaling))

    def _check_attention_variants(self) -> None:
        if self.sliding_window is not None:
            _check_int("sliding_window", self.sliding_window, low=1)
        if self.layer_types is not None:
            if isinstance(self.layer_types, str) or not isinstance(self.layer_types, (tuple, list)):
                raise TypeError(f"Config.layer_types must be a tuple of {LAYER_TYPES} per layer or None, "
                                f"got {self.layer_types!r}")
            self._derive("layer_types", tuple(self.layer_types))  # a list from YAML/JSON: hashable and frozen
            if len(self.layer_types) != self.n_layer:
                raise ValueError(f"Config.layer_types must name one type per layer (n_layer={self.n_layer}), "
                                 f"got {len(self.layer_types)}")
            for t in self.layer_types:
                _check_choice("layer_types", t, LAYER_TYPES)
            if "sliding_attention" in self.layer_types and self.sliding_window is None:
                raise ValueError("Config.layer_types has 'sliding_attention' layers but sliding_window is None")
        for name in ("attn_logit_softcap", "final_logit_softcap"):
            value = getattr(self, name)
            if value is not None and _check_float(name, value) <= 0:
                raise ValueError(f"Config.{name} must be > 0 or None, got {value}")

    def window(self, layer: int) -> Optional[int]:
        """The sliding window W of block ``layer`` (keys i - W < j <= i), or None for global attention."""
        if self.layer_types is not None and self.layer_types[layer] == "full_attention":
            return None
        return self.sliding_window

    def _derive(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: derived fields are set once, here

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "Config":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "name": name, **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        init_fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(d) - init_fields - {"rope_n_elem"}
        if unknown:
            raise ValueError(f"unknown Config fields: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in init_fields})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes``; derived fields are recomputed unless given."""
        return Config.from_dict({**self._explicit(), **changes})

    def _explicit(self) -> dict:
        """Fields as given: derived values that equal their default derivation are dropped."""
        d = self.to_dict()
        default_head = self.n_embd // self.n_head if self.n_embd % self.n_head == 0 else None
        derived = dict(padded_vocab_size=_round_up(self.vocab_size, self.padding_multiple), head_size=default_head,
                       n_query_groups=self.n_head, intermediate_size=4 * self.n_embd,
                       moe_intermediate_size=self.intermediate_size,
                       shared_expert_intermediate_size=max(1, self.n_shared_experts * self.moe_intermediate_size))
        return {k: v for k, v in d.items() if k not in derived or v != derived[k]}

    def __repr__(self) -> str:
        """A Python expression that rebuilds this config (non-default fields only)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.init}
        explicit = self._explicit()
        args = ", ".join(f"{k}={v!r}" for k, v in explicit.items() if v != defaults[k] or k in _ALWAYS_SHOWN)
        return f"Config({args})"

    # ---------------------------------------------------------------- derived quantities
    @property
    def qkv_size(self) -> int:
        return (self.n_head + 2 * self.n_query_groups) * self.head_size

    @property
    def qkv_bias(self) -> bool:
        return self.bias or self.attn_bias

    @property
    def is_moe(self) -> bool:
        return self.mlp_class_name == "MoE"

    def _dense_mlp_params(self, kind: str, width: int) -> int:
        C, b = self.n_embd, int(self.bias)
        n_in = 1 if kind == "GptNeoxMLP" else 2  # gated MLPs have fc_1 and fc_2
        return n_in * (C * width + width * b) + width * C + C * b

    def mlp_param_count(self, active: bool = False) -> int:
        """Parameters of one block's MLP; for an MoE with ``active``, those one token uses (router, shared
        expert(s) and gate, and n_experts_per_token routed experts)."""
        if not self.is_moe:
            return self._dense_mlp_params(self.mlp_class_name, self.intermediate_size)
        expert = self._dense_mlp_params(self.moe_expert_mlp, self.moe_intermediate_size)
        shared = self._dense_mlp_params(self.moe_expert_mlp, self.shared_expert_intermediate_size) \
            if self.n_shared_experts else 0
        routed = self.n_experts_per_token if active else self.n_experts
        return self.n_embd * self.n_experts + routed * expert + shared + self.n_embd * int(self.shared_expert_gate)

    def param_count(self, active: bool = False) -> int:
        """Closed-form number of parameters (tied weights once), from the fields alone. ``active``: those
        one token uses (MoE: only its n_experts_per_token routed experts; equal to the total when dense)."""
        C, V = self.n_embd, self.padded_vocab_size
        b = int(self.bias)
        norm = C * (2 if self.norm_class_name == "LayerNorm" and self.bias else 1)
        qk_norm = {"none": 0, "per_head": 2 * self.head_size,
                   "all_heads": (self.n_head + self.n_query_groups) * self.head_size}[self.qk_norm]
        attn = C * self.qkv_size + self.qkv_size * int(self.qkv_bias) + self.n_head * self.head_size * C + C * b
        attn += qk_norm
        mlp = self.mlp_param_count(active)
        n_block_norms = 1 if self.shared_attention_norm else 4 if self.norm_placement == "sandwich" else 2
        sinks = self.n_head if self.attention_sinks else 0
        block = n_block_norms * norm + attn + sinks + mlp
        embeddings = V * C + (self.block_size * C if self.position_embedding == "learned" else 0)
        head = 0 if self.tie_embeddings else V * C
        return embeddings + self.n_layer * block + norm + head

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, 6N + 12 L H D T (PaLM appendix B), N without embeddings (and, for an MoE,
        the parameters one token uses: param_count(active=True))."""
        n = self.param_count(active=True)
        if not self.tie_embeddings:  # the embedding lookup costs no FLOPs; the head's matmul does
            n -= self.padded_vocab_size * self.n_embd
        if self.position_embedding == "learned":
            n -= self.block_size * self.n_embd
        return 6 * n + 12 * self.n_layer * self.n_head * self.head_size * seq_len


_ALWAYS_SHOWN = ("vocab_size", "n_layer", "n_embd", "n_head", "block_size")


def _round_up(n: int, multiple: int) -> int:
    return multiple * math.ceil(n / multiple)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Config.{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"Config.{name} must be >= {low}, got {value}")


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Config.{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"Config.{name} must be finite, got {value}")
    return float(value)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"Config.{name} must be one of {choices}, got {value!r}")


PRESETS: dict[str, dict] = {
    # GPT-2 (Radford et al. 2019); GELU is the tanh approximation ("gelu_new")
    "gpt2": dict(vocab_size=50257, padding_multiple=64, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                 gelu_approximate="tanh"),
    "gpt2-medium": dict(vocab_size=50257, padding_multiple=64, block_size=1024, n_layer=24, n_head=16,
                        n_embd=1024, gelu_approximate="tanh"),
    # Pythia-160m (GPT-NeoX architecture): parallel residual, rotary on a quarter of each head, untied head
    "pythia-160m": dict(vocab_size=50254, padding_multiple=128, block_size=2048, n_layer=12, n_head=12, n_embd=768,
                        position_embedding="rope", rotary_percentage=0.25, parallel_residual=True,
                        tie_embeddings=False),
    # a small Llama-style model: RMSNorm, SwiGLU, GQA (4 query heads per kv head), RoPE, no biases
    "llama-tiny": dict(vocab_size=32000, padding_multiple=64, block_size=2048, n_layer=8, n_head=8, n_embd=512,
                       n_query_groups=2, intermediate_size=1376, position_embedding="rope",
                       norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", bias=False, tie_embeddings=False),
    # Published shapes of current open models (their config.json on the Hub); param_count() equals
    # transformers' count for the same config on the meta device (properties/test_presets.py, README).
    # Sliding windows and soft-caps (Mistral v0.1, Gemma 2, Phi-3) as published; they change no parameter shapes.
    "llama-3.2-1b": dict(vocab_size=128256, padding_multiple=64, block_size=131072, n_layer=16, n_embd=2048,
                         n_head=32, n_query_groups=8, intermediate_size=8192, position_embedding="rope",
                         rope_base=500000.0, rope_scaling=dict(type="llama3", factor=32.0, low_freq_factor=1.0,
                                                               high_freq_factor=4.0,
                                                               original_max_position_embeddings=8192),
                         norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", bias=False, tie_embeddings=True),
    "mistral-7b": dict(vocab_size=32000, padding_multiple=64, block_size=32768, n_layer=32, n_embd=4096, n_head=32,
                       n_query_groups=8, intermediate_size=14336, position_embedding="rope", rope_base=10000.0,
                       norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", bias=False, tie_embeddings=False,
                       sliding_window=4096),
    "qwen3-0.6b": dict(vocab_size=151936, padding_multiple=64, block_size=40960, n_layer=28, n_embd=1024, n_head=16,
                       n_query_groups=8, head_size=128, intermediate_size=3072, position_embedding="rope",
                       rope_base=1000000.0, norm_class_name="RMSNorm", norm_eps=1e-6, qk_norm="per_head",
                       mlp_class_name="LLaMAMLP", bias=False, tie_embeddings=True),
    "gemma-2-2b": dict(vocab_size=256000, padding_multiple=64, block_size=8192, n_layer=26, n_embd=2304, n_head=8,
                       n_query_groups=4, head_size=256, intermediate_size=9216, position_embedding="rope",
                       rope_base=10000.0, norm_class_name="RMSNorm", norm_eps=1e-6, norm_placement="sandwich",
                       mlp_class_name="GemmaMLP", gelu_approximate="tanh", bias=False, scale_embeddings=True,
                       tie_embeddings=True, sliding_window=4096, attn_logit_softcap=50.0, final_logit_softcap=30.0,
                       layer_types=tuple(("sliding_attention", "full_attention")[i % 2] for i in range(26))),
    "olmo-2-1b": dict(vocab_size=100352, padding_multiple=64, block_size=4096, n_layer=16, n_embd=2048, n_head=16,
                      intermediate_size=8192, position_embedding="rope", rope_base=500000.0,
                      norm_class_name="RMSNorm", norm_eps=1e-6, norm_placement="post", qk_norm="all_heads",
                      mlp_class_name="LLaMAMLP", bias=False, tie_embeddings=False),
    "phi-3-mini": dict(vocab_size=32064, padding_multiple=64, block_size=4096, n_layer=32, n_embd=3072, n_head=32,
                       intermediate_size=8192, position_embedding="rope", rope_base=10000.0,
                       norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", bias=False, tie_embeddings=False,
                       sliding_window=2047),
    # nanoGPT's character-level tiny-shakespeare model (65 characters)
    "shakespeare-char": dict(vocab_size=65, padding_multiple=1, block_size=256, n_layer=6, n_head=6, n_embd=384,
                             embd_dropout=0.2, attn_dropout=0.2, resid_dropout=0.2, bias=False),
    # Mixtral-8x7B (Jiang et al. 2024): 8 SwiGLU experts, top-2, renormalised; GQA 32/8, untied
    "mixtral-8x7b": dict(vocab_size=32000, padding_multiple=64, block_size=32768, n_layer=32, n_head=32, n_embd=4096,
                         n_query_groups=8, intermediate_size=14336, position_embedding="rope", rope_base=1e6,
                         norm_class_name="RMSNorm", bias=False, tie_embeddings=False, mlp_class_name="MoE",
                         n_experts=8, n_experts_per_token=2, moe_routing="softmax_topk_renorm",
                         moe_expert_mlp="LLaMAMLP"),
    # Qwen1.5-MoE-A2.7B (transformers' Qwen2-MoE): 60 experts of 1408, top-4 not renormalised, one gated
    # shared expert of 5632, q/k/v biases
    "qwen2-moe-a2.7b": dict(vocab_size=151936, padding_multiple=64, block_size=8192, n_layer=24, n_head=16,
                            n_embd=2048, intermediate_size=5632, position_embedding="rope", rope_base=1e6,
                            norm_class_name="RMSNorm", norm_eps=1e-6, bias=False, attn_bias=True,
                            tie_embeddings=False, mlp_class_name="MoE", n_experts=60, n_experts_per_token=4,
                            moe_routing="softmax_topk", moe_expert_mlp="LLaMAMLP", moe_intermediate_size=1408,
                            n_shared_experts=1, shared_expert_intermediate_size=5632, shared_expert_gate=True),
    # OLMoE-1B-7B-0924: 64 experts of 1024, top-8 not renormalised. Without OLMoE's q/k RMSNorms (no gpt
    # field yet): transformers' count is 4096 per layer (65536) higher
    "olmoe-1b-7b": dict(vocab_size=50304, padding_multiple=64, block_size=4096, n_layer=16, n_head=16, n_embd=2048,
                        intermediate_size=1024, position_embedding="rope", norm_class_name="RMSNorm",
                        bias=False, tie_embeddings=False, mlp_class_name="MoE", n_experts=64,
                        n_experts_per_token=8, moe_routing="softmax_topk", moe_expert_mlp="LLaMAMLP"),
}
