"""Hugging Face mixture-of-experts models as subjects: Mixtral, Qwen2-MoE and OLMoE with random weights.

Built like the dense HF subjects (properties.hf_subjects): the transformers ``*ForCausalLM`` for a drawn
``Config`` (through ``gpt.convert_moe.moe_config_to_hf``), HF's own random init under the seed, HF's forward
and ``DynamicCache``; the float64 models run under ``hf_float64`` (transformers' routers take the softmax
in float32). Experts run through the modeling file's own per-expert loop (``experts_implementation="eager"``;
the default grouped_mm kernel refuses float64 on CPU).

Routing in transformers 5.24: softmax over all experts, then ``torch.topk``; Mixtral renormalises the kept
weights always, Qwen2-MoE and OLMoE iff ``norm_topk_prob``. Ties: ``torch.topk``'s order is unspecified,
ours keeps the lower index; random float64 router weights have no ties, and no property here compares
routing across implementations at a tie. Padding: routing is per token and dropless in all three, so
padded positions cannot change real tokens' routing; only transformers' aux loss masks them
(``load_balancing_loss_func(..., attention_mask)``), and the subjects pass no padding.

Aux loss (capability ``aux_loss``): transformers' ``output_router_logits=True`` returns ``aux_loss`` with
f_i summing to k; the subject divides by k to the declared convention (aux == 1 for uniform routing).

Each space draws only what the family can express; every restriction says why.
"""
from __future__ import annotations

import torch
from torch import nn

from gpt.config import Config
from gpt.convert_moe import moe_config_to_hf, moe_state_dict_from_hf, moe_state_dict_to_hf
from properties.hf_subjects import HF_CAPABILITIES, HFSubject
from strategies.space import ConfigSpace

_COMMON = dict(
    positions=("rope",), norms=("RMSNorm",), mlps=("MoE",),
    moe_expert_mlps=("LLaMAMLP",),  # SwiGLU experts (hidden_act silu) only
    bias=(False,),  # experts, routers and o_proj carry no biases
    parallel_residual=(False,), shared_attention_norm=(False,),
    partial_rotary=False, odd_rotary=False,  # full rotary over an even head_dim
    divisible_n_embd=True,
    dropout_groups=(("attn_dropout",),),  # attention_dropout is the only dropout
    backends=("math", "sdpa"),
)


class MoEWeightMap:
    """``gpt.convert_moe``'s conversion (checked against transformers by test_moe_hf_differential) as the
    subject's weight map: Mixtral and Qwen2-MoE."""

    def __init__(self, family: str) -> None:
        self.family = family

    def to_subject(self, reference, config: Config) -> dict:
        out = moe_state_dict_to_hf(reference, config, self.family)
        if config.tie_embeddings:
            out.pop("lm_head.weight", None)  # the same tensor as the embedding
        return out

    def to_reference(self, tensors, config: Config) -> dict:
        return moe_state_dict_from_hf(tensors, config, self.family)


class HFMoESubject(HFSubject):
    capabilities = HF_CAPABILITIES | {"aux_loss"}
    # attention output, every routed expert's down projection (one (E, C, I) tensor) and the shared expert's
    residual_suffixes = ("self_attn.o_proj.weight", "mlp.experts.down_proj", "mlp.shared_expert.down_proj.weight")

    def __init__(self, exact_float64: bool = True) -> None:
        super().__init__(exact_float64)
        self.weight_map = MoEWeightMap(self.family) if "reference_weights" in self.capabilities else None

    def build(self, config: Config, seed: int, dtype=torch.float64, device="cpu") -> nn.Module:
        import transformers

        hf_config = moe_config_to_hf(config, self.family)
        torch.manual_seed(seed)
        model = getattr(transformers, self.hf_class)(hf_config)
        return model.to(device=device, dtype=dtype)

    def logits_and_aux_loss(self, model, idx):
        with self._numerics(model):
            out = model(input_ids=idx, use_cache=False, output_router_logits=True)
        return out.logits, out.aux_loss / model.config.num_experts_per_tok

    def param_count(self, config: Config) -> int:
        """Our closed form without vocabulary padding (HF has none), plus family extras."""
        return config.replace(padding_multiple=1, padded_vocab_size=config.vocab_size).param_count()


class HFMixtralSubject(HFMoESubject):
    """``MixtralForCausalLM``: Llama attention (GQA, free head_dim), 8x-style SwiGLU experts, renormalised top-k."""

    name = "hf-mixtral"
    family, hf_class = "mixtral", "MixtralForCausalLM"
    space = ConfigSpace(
        **_COMMON,
        attn_bias=(False,),  # no attention biases at all
        moe_routings=("softmax_topk_renorm", "topk_softmax"),  # Mixtral always renormalises
        n_shared_experts=(0,),  # no shared experts
    )


class HFQwenMoESubject(HFMoESubject):
    """``Qwen2MoeForCausalLM``: q/k/v biases, one sigmoid-gated shared expert, top-k renormalised iff norm_topk_prob."""

    name = "hf-qwen-moe"
    family, hf_class = "qwen2_moe", "Qwen2MoeForCausalLM"
    space = ConfigSpace(
        **{**_COMMON, "divisible_n_embd": False},
        free_head_size=False,  # head_dim is hidden_size // num_attention_heads
        n_shared_experts=(1,), shared_expert_gate=(True,),  # always exactly one gated shared expert (its width
        # is free: shared_expert_intermediate_size)
    )


class HFOlmoeSubject(HFMoESubject):
    """``OlmoeForCausalLM``: no shared experts, top-k renormalised iff norm_topk_prob, and RMSNorms over the
    whole q and k projections (q_norm, k_norm) that ``gpt`` has no field for: this subject is a different
    model from ``gpt`` with the same Config, so it is checked by the generic properties only."""

    name = "hf-olmoe"
    family, hf_class = "olmoe", "OlmoeForCausalLM"
    # no weight map (its QK-norms have no gpt counterpart in gpt.convert_moe), so neither the fixed-weight
    # differential nor the residual identity (which maps zeroed parameters to the reference's names)
    capabilities = HFMoESubject.capabilities - {"reference_weights", "residual_projections"}
    space = ConfigSpace(
        **{**_COMMON, "divisible_n_embd": False},
        free_head_size=False,  # head_dim is hidden_size // num_attention_heads
        attn_bias=(False,),  # attention_bias would also bias o_proj
        n_shared_experts=(0,),
    )

    def param_count(self, config: Config) -> int:
        """+ q_norm (n_embd) and k_norm (n_query_groups * head_size) per layer."""
        extra = config.n_layer * (config.n_embd + config.n_query_groups * config.head_size)
        return super().param_count(config) + extra
