"""Mixture-of-experts families to and from Hugging Face transformers: Mixtral, Qwen2-MoE and OLMoE (configs).

::

    from gpt.convert_moe import moe_to_hf, moe_from_hf
    hf = moe_to_hf(model, "mixtral")      # MixtralForCausalLM / Qwen2MoeForCausalLM with the same weights
    back = moe_from_hf(hf)                # and back; weights are copied exactly

Layouts (HF 5 -> ours), per layer ``model.layers.{i}.``:

* attention and norms as Llama (q/k/v/o, input_layernorm, post_attention_layernorm); Qwen2-MoE biases
  q/k/v only (``qkv_bias``; our ``attn_bias=True, bias=False``).
* ``mlp.gate.weight`` (E, C) is our ``mlp.router.weight``.
* ``mlp.experts.gate_up_proj`` (E, 2I, C) is [gate ; up] per expert: our ``mlp.experts.{e}.fc_1`` / ``fc_2``;
  ``mlp.experts.down_proj`` (E, C, I) is ``mlp.experts.{e}.proj``.
* Qwen2-MoE ``mlp.shared_expert.{gate,up,down}_proj`` is our ``mlp.shared`` (fc_1, fc_2, proj) and
  ``mlp.shared_expert_gate`` (1, C) our ``mlp.shared_gate``.

Routing: transformers 5.24's routers all take softmax(z) over every expert in float32 (served in float64 by
``hf_float64``) and then ``torch.topk``; Mixtral always renormalises the kept weights
(``softmax_topk_renorm``), Qwen2-MoE / Qwen3-MoE / OLMoE renormalise iff ``norm_topk_prob``.
OLMoE always applies RMSNorms to the whole q and k projections (q_norm / k_norm), which ``gpt`` has no
field for: its config maps one way only (for the ``hf-olmoe`` subject) and its weights do not convert.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from .config import Config

MOE_FAMILIES = ("mixtral", "qwen2_moe", "olmoe")
CONVERTIBLE = ("mixtral", "qwen2_moe")
_HF_CLASSES = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "olmoe": "OlmoeForCausalLM"}
_HF_CONFIGS = {"mixtral": "MixtralConfig", "qwen2_moe": "Qwen2MoeConfig", "olmoe": "OlmoeConfig"}
_ACT = {"LLaMAMLP": "silu"}


def check_moe_expressible(config: Config, family: str) -> None:
    """Raise ValueError naming the first field of ``config`` the MoE family cannot express."""
    if family not in MOE_FAMILIES:
        raise ValueError(f"family must be one of {MOE_FAMILIES}, got {family!r}")
    c = config

    def req(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{_HF_CLASSES[family]} cannot express this config: {what}")

    req(c.mlp_class_name == "MoE", "mlp_class_name must be 'MoE'")
    req(c.moe_expert_mlp == "LLaMAMLP", "moe_expert_mlp must be 'LLaMAMLP' (SwiGLU experts)")
    req(c.position_embedding == "rope", "position_embedding must be 'rope'")
    req(c.norm_class_name == "RMSNorm", "norm_class_name must be 'RMSNorm'")
    req(c.rope_n_elem == c.head_size and c.head_size % 2 == 0, "rotary_percentage must be 1 with an even head_size")
    req(not c.parallel_residual and not c.shared_attention_norm, "parallel_residual must be False")
    req(not c.bias, "bias must be False (experts and o_proj have no biases)")
    req(c.embd_dropout == 0 and c.resid_dropout == 0, "embd_dropout and resid_dropout must be 0")
    req(c.attn_backend in ("math", "sdpa"), f"attn_backend={c.attn_backend!r}")
    req(all(c.window(i) is None for i in range(c.n_layer)), "sliding_window must be None (not mapped)")
    req(c.attn_logit_softcap is None and c.final_logit_softcap is None and not c.attention_sinks,
        "attn_logit_softcap, final_logit_softcap must be None and attention_sinks False")
    if family != "mixtral":  # head_dim is hidden_size // num_attention_heads
        req(c.n_head * c.head_size == c.n_embd, f"head_size ({c.head_size}) must be n_embd // n_head")
    if family == "qwen2_moe":
        req(c.n_shared_experts >= 1 and c.shared_expert_gate, "Qwen2-MoE always has a gated shared expert "
            "(n_shared_experts >= 1, shared_expert_gate=True)")
    else:
        req(c.n_shared_experts == 0, "n_shared_experts must be 0")
        req(not c.attn_bias, "attn_bias must be False")
    if family == "mixtral":
        req(c.moe_routing in ("softmax_topk_renorm", "topk_softmax"), "moe_routing must renormalise")


def moe_config_to_hf_dict(config: Config, family: str) -> dict:
    """The config.json fields (transformers 5 naming) of ``config`` in the MoE ``family``."""
    check_moe_expressible(config, family)
    c = config
    d = dict(model_type=family, vocab_size=c.vocab_size, tie_word_embeddings=c.tie_embeddings, bos_token_id=None,
             eos_token_id=None, pad_token_id=None, use_cache=True, hidden_size=c.n_embd,
             num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_query_groups,
             hidden_act="silu", max_position_embeddings=c.block_size, rms_norm_eps=c.norm_eps,
             rope_parameters={"rope_type": "default", "rope_theta": c.rope_base}, attention_dropout=c.attn_dropout,
             num_experts_per_tok=c.n_experts_per_token, output_router_logits=False)
    renorm = c.moe_routing != "softmax_topk"
    if family == "mixtral":
        d.update(intermediate_size=c.moe_intermediate_size, num_local_experts=c.n_experts, head_dim=c.head_size,
                 router_jitter_noise=0.0, sliding_window=None)
    elif family == "qwen2_moe":
        d.update(intermediate_size=c.intermediate_size, moe_intermediate_size=c.moe_intermediate_size,
                 num_experts=c.n_experts, shared_expert_intermediate_size=c.shared_expert_intermediate_size,
                 norm_topk_prob=renorm, qkv_bias=c.attn_bias, decoder_sparse_step=1, mlp_only_layers=[],
                 use_sliding_window=False)
    else:
        d.update(intermediate_size=c.moe_intermediate_size, num_experts=c.n_experts, norm_topk_prob=renorm,
                 attention_bias=False, clip_qkv=None)
    return d


def moe_config_to_hf(config: Config, family: str, attn_implementation: Optional[str] = None):
    import transformers

    kw = moe_config_to_hf_dict(config, family)
    kw.pop("model_type")
    kw["attn_implementation"] = attn_implementation or {"math": "eager", "sdpa": "sdpa"}[config.attn_backend]
    # the modeling file's own per-expert loop: the default grouped_mm kernel refuses float64 on CPU
    kw["experts_implementation"] = "eager"
    return getattr(transformers, _HF_CONFIGS[family])(**kw)


def moe_config_from_hf(hf_config: Any, **overrides: Any) -> Config:
    """Our ``Config`` for a Mixtral or Qwen2-MoE config object or config.json dict."""
    d = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    family = d.get("model_type")
    if family not in CONVERTIBLE:
        raise ValueError(f"model_type must be one of {CONVERTIBLE}, got {family!r}")
    rope = dict(d.get("rope_parameters") or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only default RoPE is supported, got rope_parameters={rope}")
    if d.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act must be 'silu', got {d.get('hidden_act')!r}")
    impl = d.get("_attn_implementation") or getattr(hf_config, "_attn_implementation", None)
    n_head = d["num_attention_heads"]
    kw = dict(vocab_size=d["vocab_size"], padding_multiple=1, tie_embeddings=bool(d.get("tie_word_embeddings")),
              attn_backend={"eager": "math"}.get(impl, "sdpa"), block_size=d["max_position_embeddings"],
              n_layer=d["num_hidden_layers"], n_head=n_head, n_embd=d["hidden_size"],
              n_query_groups=d.get("num_key_value_heads") or n_head,
              head_size=d.get("head_dim") or d["hidden_size"] // n_head, position_embedding="rope",
              rope_base=float(rope.get("rope_theta", d.get("rope_theta", 1e6))), norm_class_name="RMSNorm",
              norm_eps=d["rms_norm_eps"], bias=False, attn_dropout=d.get("attention_dropout", 0.0),
              mlp_class_name="MoE", moe_expert_mlp="LLaMAMLP", n_experts_per_token=d["num_experts_per_tok"])
    if family == "mixtral":
        kw.update(intermediate_size=d["intermediate_size"], n_experts=d["num_local_experts"],
                  moe_routing="softmax_topk_renorm")
        if d.get("sliding_window") is not None:
            raise ValueError("Mixtral with sliding_window is not supported")
    else:
        if d.get("mlp_only_layers") or d.get("decoder_sparse_step", 1) != 1 or d.get("use_sliding_window"):
            raise ValueError("Qwen2-MoE with dense layers (mlp_only_layers, decoder_sparse_step != 1) or "
                             "sliding windows is not supported")
        kw.update(intermediate_size=d["intermediate_size"], moe_intermediate_size=d["moe_intermediate_size"],
                  n_experts=d["num_experts"], n_shared_experts=1, shared_expert_gate=True,
                  shared_expert_intermediate_size=d["shared_expert_intermediate_size"],
                  moe_routing="softmax_topk_renorm" if d.get("norm_topk_prob") else "softmax_topk",
                  attn_bias=bool(d.get("qkv_bias", True)))
    config = Config(**{**kw, **overrides})
    check_moe_expressible(config, family)
    return config


# ---------------------------------------------------------------------------------------------- weights
def moe_state_dict_to_hf(sd: Mapping[str, Tensor], config: Config, family: str) -> dict:
    """Our ``GPT.state_dict()`` as the family's HF state dict (``lm_head.weight`` always present)."""
    if family not in CONVERTIBLE:
        raise ValueError(f"weights convert for {CONVERTIBLE} only, got {family!r}")
    check_moe_expressible(config, family)
    c, V = config, config.vocab_size
    out = {"model.embed_tokens.weight": sd["wte.weight"][:V], "model.norm.weight": sd["norm_f.weight"]}
    out["lm_head.weight"] = out["model.embed_tokens.weight"] if c.tie_embeddings else sd["lm_head.weight"][:V]
    q_rows, kv_rows = c.n_head * c.head_size, c.n_query_groups * c.head_size
    for i in range(c.n_layer):
        b, p = f"blocks.{i}.", f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = sd[b + "norm_1.weight"]
        out[p + "post_attention_layernorm.weight"] = sd[b + "norm_2.weight"]
        for suffix in ("weight", "bias"):
            if b + "attn.qkv." + suffix in sd:
                for name, t in zip("qkv", sd[b + "attn.qkv." + suffix].split((q_rows, kv_rows, kv_rows))):
                    out[f"{p}self_attn.{name}_proj.{suffix}"] = t
        out[p + "self_attn.o_proj.weight"] = sd[b + "attn.proj.weight"]
        m = b + "mlp."
        out[p + "mlp.gate.weight"] = sd[m + "router.weight"]
        E = range(c.n_experts)
        out[p + "mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([sd[f"{m}experts.{e}.fc_1.weight"], sd[f"{m}experts.{e}.fc_2.weight"]]) for e in E])
        out[p + "mlp.experts.down_proj"] = torch.stack([sd[f"{m}experts.{e}.proj.weight"] for e in E])
        if c.n_shared_experts:
            for ours, theirs in (("fc_1", "gate_proj"), ("fc_2", "up_proj"), ("proj", "down_proj")):
                out[f"{p}mlp.shared_expert.{theirs}.weight"] = sd[f"{m}shared.{ours}.weight"]
        if c.shared_expert_gate:
            out[p + "mlp.shared_expert_gate.weight"] = sd[m + "shared_gate.weight"]
    return out


def moe_state_dict_from_hf(hf_sd: Mapping[str, Tensor], config: Config, family: str) -> dict:
    """An HF state dict of the family as our ``GPT.state_dict()``; ValueError on missing or unused tensors."""
    check_moe_expressible(config, family)
    c = config
    sd = {(k if k.startswith("model.") or k == "lm_head.weight" else "model." + k): v for k, v in hf_sd.items()}
    used: set = set()

    def take(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"HF state dict has no {key!r} (needed for {_HF_CLASSES[family]} with this config)")
        used.add(key)
        return sd[key]

    wte = take("model.embed_tokens.weight")
    out = {"wte.weight": _dense._pad_rows(wte, c.padded_vocab_size), "norm_f.weight": take("model.norm.weight")}
    if c.tie_embeddings:
        used.add("lm_head.weight")
        out["lm_head.weight"] = out["wte.weight"]
    else:
        out["lm_head.weight"] = _dense._pad_rows(take("lm_head.weight"), c.padded_vocab_size)
    I = c.moe_intermediate_size
    for i in range(c.n_layer):
        b, p = f"blocks.{i}.", f"model.layers.{i}."
        out[b + "norm_1.weight"] = take(p + "input_layernorm.weight")
        out[b + "norm_2.weight"] = take(p + "post_attention_layernorm.weight")
        out[b + "attn.qkv.weight"] = torch.cat([take(f"{p}self_attn.{x}_proj.weight") for x in "qkv"])
        if c.attn_bias:
            out[b + "attn.qkv.bias"] = torch.cat([take(f"{p}self_attn.{x}_proj.bias") for x in "qkv"])
        out[b + "attn.proj.weight"] = take(p + "self_attn.o_proj.weight")
        m = b + "mlp."
        out[m + "router.weight"] = take(p + "mlp.gate.weight")
        gate_up, down = take(p + "mlp.experts.gate_up_proj"), take(p + "mlp.experts.down_proj")
        for e in range(c.n_experts):
            out[f"{m}experts.{e}.fc_1.weight"], out[f"{m}experts.{e}.fc_2.weight"] = gate_up[e].split((I, I))
            out[f"{m}experts.{e}.proj.weight"] = down[e]
        if c.n_shared_experts:
            for ours, theirs in (("fc_1", "gate_proj"), ("fc_2", "up_proj"), ("proj", "down_proj")):
                out[f"{m}shared.{ours}.weight"] = take(f"{p}mlp.shared_expert.{theirs}.weight")
        if c.shared_expert_gate:
            out[m + "shared_gate.weight"] = take(p + "mlp.shared_expert_gate.weight")
    unexpected = sorted(k for k in set(sd) - used if not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise ValueError(f"HF state dict has tensors this config does not use: {unexpected[:8]}")
    return {k: v.clone() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- models
def moe_to_hf(model, family: str, attn_implementation: Optional[str] = None):
    """A transformers Mixtral / Qwen2-MoE model with ``model``'s weights (copied), dtype, device and mode."""
    hf_config = moe_config_to_hf(model.config, family, attn_implementation)
    sd = moe_state_dict_to_hf(model.state_dict(), model.config, family)
    return _dense._hf_model(model, _HF_CLASSES[family], hf_config, sd)


def moe_from_hf(hf_model, **overrides: Any):
    """Our ``GPT`` with the weights of a transformers ``MixtralForCausalLM`` or ``Qwen2MoeForCausalLM``."""
    config = moe_config_from_hf(hf_model.config, **overrides)
    ref = hf_model.get_input_embeddings().weight
    sd = moe_state_dict_from_hf(hf_model.state_dict(), config, hf_model.config.model_type)
    return _dense._build(config, sd, ref.dtype, ref.device).train(hf_model.training)


from . import convert_hf as _dense  # noqa: E402  last: convert_hf re-exports this module's names
