"""Which configs an implementation can express: each subject narrows the space the strategies draw from."""
from __future__ import annotations

from dataclasses import dataclass

from gpt.config import MLPS, MOE_ROUTINGS, NORM_PLACEMENTS, NORMS, QK_NORMS
from gpt.rope_scaling import ROPE_SCALINGS


@dataclass(frozen=True)
class ConfigSpace:
    """The choices allowed on every architecture axis of ``gpt.Config``.

    A tuple lists the values that may be drawn; a bool switches a whole feature on or off.
    """

    positions: tuple = ("learned", "rope")
    norms: tuple = NORMS
    mlps: tuple = MLPS  # add "MoE" to draw mixtures of experts (GPTSubject does; others opt in)
    gelu_approximations: tuple = ("none", "tanh")
    backends: tuple = ("math", "sdpa")
    bias: tuple = (False, True)
    attn_bias: tuple = (False, True)
    parallel_residual: tuple = (False, True)
    shared_attention_norm: tuple = (False, True)
    tie_embeddings: tuple = (False, True)
    gqa: bool = True  # n_query_groups < n_head (GQA, MQA)
    free_head_size: bool = True  # head_size other than n_embd // n_head
    divisible_n_embd: bool = False  # a free n_embd is still a multiple of n_head (LlamaConfig checks it)
    partial_rotary: bool = True  # rotary_percentage < 1
    odd_rotary: bool = True  # an odd number of rotated features
    vocab_padding: bool = True  # padded_vocab_size > vocab_size
    intermediate_sizes: bool = True  # intermediate_size other than 4 * n_embd
    norm_eps: tuple = (1e-5, 1e-3, 0.1)
    # attention variants, off unless the implementation expresses them (Mistral, Gemma 2, GPT-OSS)
    sliding_window: bool = False  # a sliding window of W keys on every layer
    min_sliding_window: int = 1  # the smallest W drawn (a subject states why it raises it)
    layer_types: bool = False  # per-layer full/sliding pattern (Gemma 2/3); needs sliding_window
    attn_logit_softcap: bool = False  # c * tanh(s / c) on the attention scores
    final_logit_softcap: bool = False  # c * tanh(z / c) on the output logits
    attention_sinks: bool = False  # a learned per-head sink logit in the softmax denominator
    # configs(dropout=True) draws one probability per group for the fields in it; fields in no group stay
    # 0. A group of several fields shares one value (GPT-NeoX's hidden_dropout is embd and resid dropout).
    dropout_groups: tuple = (("embd_dropout",), ("attn_dropout",), ("resid_dropout",))
    # Config fields the implementation does not honour (e.g. ("norm_eps",) for a norm with a hard-coded
    # eps): never drawn, left at their Config default, and exempt from config-liveness
    # (properties/test_config_liveness.py), which fails for any other field that changes nothing
    ignored: tuple = ()
    # MoE axes, used only when "MoE" is in mlps
    max_experts: int = 5
    moe_routings: tuple = MOE_ROUTINGS
    moe_expert_mlps: tuple = MLPS
    n_shared_experts: tuple = (0, 1, 2)
    shared_expert_gate: tuple = (False, True)
    free_shared_expert_size: bool = True  # shared_expert_intermediate_size other than n_shared * moe width
    # Axes of modern architectures (issue 16). Off by default: a model written before them (a user's
    # make(config)) would compute something else for them; subjects that implement them claim them.
    qk_norms: tuple = ("none",)
    norm_placements: tuple = ("pre",)
    scale_embeddings: tuple = (False,)
    rope_scalings: tuple = ("none",)  # "none" and types of gpt.rope_scaling.ROPE_SCALINGS


# every modern axis on, for subjects that implement them all (gpt.GPT)
MODERN_AXES = dict(qk_norms=QK_NORMS, norm_placements=NORM_PLACEMENTS, scale_embeddings=(False, True),
                   rope_scalings=("none",) + ROPE_SCALINGS)
