"""The Llama-shaped transformers families: Llama, Mistral, Qwen2, Qwen3, Gemma 2, OLMo 2 and Phi-3.

They share one layout (pre-RMSNorm blocks of q/k/v/o attention and a gated MLP under ``model.``) and differ
in a few declared ways, listed per family in ``SPECS``; ``gpt.convert_hf`` dispatches here for them.

* biases: Llama's ``attention_bias`` / ``mlp_bias`` (our ``bias`` covers both); Qwen2 always biases q, k and
  v and nothing else (our ``attn_bias=True, bias=False``); the others have none we can express (Qwen3's,
  OLMo 2's and Gemma 2's ``attention_bias`` also bias o_proj).
* head_dim: free in Llama, Mistral, Qwen3 and Gemma 2; hidden_size // num_attention_heads in Qwen2, OLMo 2
  and Phi-3.
* QK-norm: Qwen3 per head (``qk_norm="per_head"``), OLMo 2 over all heads' projection (``"all_heads"``).
* norm placement: Gemma 2 sandwich (input / post_attention / pre_feedforward / post_feedforward norms are
  our norm_1 / post_attn_norm / norm_2 / post_mlp_norm), OLMo 2 post (post_attention / post_feedforward).
* Gemma 2's RMSNorm multiplies by (1 + weight): our weight is 1 + theirs (exact for HF's zero init and for
  our ones; other values round once). It also scales embeddings by sqrt(hidden_size) and uses
  query_pre_attn_scalar = head_dim here.
* Phi-3 fuses qkv_proj ([q | k | v], as ours) and gate_up_proj ([gate | up]), rotates a fraction of each
  head (partial_rotary_factor) and has residual dropout (resid_pdrop) but no embedding dropout.
* RoPE scaling: linear, llama3 and yarn map to ``rope_parameters`` of the same ``rope_type`` in every
  family (see gpt.rope_scaling).

* Sliding windows: transformers 5 masks key index j for query index i iff j > i - sliding_window
  (masking_utils.sliding_window_overlay): W keys including the query itself, our convention, so W maps to
  sliding_window unchanged in every family. Mistral and Phi-3 window every layer (one sliding_window, no
  per-layer pattern); Qwen2 / Qwen3 turn it on with use_sliding_window and take an explicit layer_types
  list; Gemma 2 always has both (no window: every layer "full_attention"). OLMo 2 and Llama have no window.
* Soft-capping: Gemma 2 only (attn_logit_softcapping, c * tanh(s / c) on the scaled scores before the
  mask, and final_logit_softcapping on the logits), as ours. transformers runs it in eager attention only.
* Attention sinks: none of these families.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .config import Config


@dataclass(frozen=True)
class Spec:
    hf_class: str
    hf_config: str
    bias: str = "none"  # "llama": attention_bias = mlp_bias = bias; "qkv": q/k/v always biased; "none"
    free_head_dim: bool = True
    qk_norm: str = "none"
    norm_placement: str = "pre"
    norm_offset: float = 0.0  # HF norm weight = ours - offset
    scale_embeddings: bool = False
    fused: bool = False  # Phi-3's qkv_proj and gate_up_proj
    partial_rotary: bool = False
    act_key: str = "hidden_act"
    # sliding windows: "none"; "uniform" (one sliding_window on every layer: Mistral, Phi-3);
    # "use_sliding" (use_sliding_window + layer_types: Qwen2, Qwen3); "layer_types" (Gemma 2: always both)
    window: str = "none"
    softcap: bool = False  # attn_logit_softcapping and final_logit_softcapping (Gemma 2)


SPECS = {
    "llama": Spec("LlamaForCausalLM", "LlamaConfig", bias="llama"),
    "mistral": Spec("MistralForCausalLM", "MistralConfig", window="uniform"),
    "qwen2": Spec("Qwen2ForCausalLM", "Qwen2Config", bias="qkv", free_head_dim=False, window="use_sliding"),
    "qwen3": Spec("Qwen3ForCausalLM", "Qwen3Config", qk_norm="per_head", window="use_sliding"),
    "gemma2": Spec("Gemma2ForCausalLM", "Gemma2Config", norm_placement="sandwich", norm_offset=1.0,
                   scale_embeddings=True, act_key="hidden_activation", window="layer_types", softcap=True),
    "olmo2": Spec("Olmo2ForCausalLM", "Olmo2Config", free_head_dim=False, qk_norm="all_heads",
                  norm_placement="post"),
    "phi3": Spec("Phi3ForCausalLM", "Phi3Config", free_head_dim=False, fused=True, partial_rotary=True,
                 window="uniform"),
}
_GELU = {"none": "gelu", "tanh": "gelu_pytorch_tanh"}


# ---------------------------------------------------------------------------------------------- RoPE
def rope_parameters(c: Config) -> dict:
    """transformers 5 ``rope_parameters`` for a rope config, scaling included."""
    rope = {"rope_type": "default", "rope_theta": c.rope_base}
    s = c.rope_scaling
    if s is not None:
        rope.update({k: v for k, v in s.items() if k != "type" and v is not None}, rope_type=s["type"])
    return rope


def rope_scaling_from_hf(rope: dict, scaling: Optional[dict]) -> Optional[dict]:
    """Our ``rope_scaling`` from ``rope_parameters`` (transformers 5) or a legacy ``rope_scaling`` dict."""
    src = dict(scaling) if scaling else dict(rope)
    kind = src.get("rope_type", src.get("type", "default"))
    if kind in (None, "default"):
        return None
    if kind not in ("linear", "llama3", "yarn"):
        raise ValueError(f"RoPE type {kind!r} is not supported; use default, linear, llama3 or yarn")
    keys = {"linear": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
            "yarn": ("factor", "beta_fast", "beta_slow", "original_max_position_embeddings", "attention_factor",
                     "truncate")}[kind]
    unsupported = sorted(k for k in ("mscale", "mscale_all_dim") if src.get(k))
    if unsupported:
        raise ValueError(f"yarn parameters {unsupported} are not supported")
    return {"type": kind, **{k: src[k] for k in keys if src.get(k) is not None}}


# ---------------------------------------------------------------------------------------------- configs
def check(c: Config, family: str, req: Callable[[bool, str], None]) -> None:
    s = SPECS[family]
    req(c.position_embedding == "rope", "position_embedding must be 'rope'")
    req(c.norm_class_name == "RMSNorm", "norm_class_name must be 'RMSNorm'")
    req(not c.parallel_residual, "parallel_residual must be False")
    if family in ("llama", "gemma2"):
        req(c.mlp_class_name in ("LLaMAMLP", "GemmaMLP") if family == "llama" else c.mlp_class_name == "GemmaMLP",
            "mlp_class_name must be 'LLaMAMLP' or 'GemmaMLP'" if family == "llama" else "mlp_class_name must be "
            "'GemmaMLP' (hidden_activation is a GELU)")
    else:
        req(c.mlp_class_name == "LLaMAMLP", "mlp_class_name must be 'LLaMAMLP' (SwiGLU)")
    if s.partial_rotary:
        req(c.rope_n_elem % 2 == 0, f"rotary_percentage gives an odd number of rotary features ({c.rope_n_elem})")
        req(int(c.head_size * c.rotary_percentage) == c.rope_n_elem, "rotary_percentage x head_size rounding")
    else:
        req(c.rope_n_elem == c.head_size and c.head_size % 2 == 0,
            f"rotary_percentage must be 1 with an even head_size (got {c.rope_n_elem} of {c.head_size} rotated)")
    if s.bias == "llama":
        req(not c.attn_bias or c.bias, "attn_bias=True with bias=False (attention_bias also biases o_proj)")
    elif s.bias == "qkv":
        req(not c.bias and c.attn_bias, "bias must be False and attn_bias True (q, k, v are always biased)")
    else:
        req(not c.bias and not c.attn_bias, "bias and attn_bias must be False")
    if family in ("llama", "gemma2"):  # their configs validate it even with an explicit head_dim
        req(c.n_embd % c.n_head == 0, f"n_embd ({c.n_embd}) must be divisible by n_head ({c.n_head})")
    if not s.free_head_dim:
        req(c.n_head * c.head_size == c.n_embd, f"head_size ({c.head_size}) must be n_embd // n_head")
    req(c.qk_norm == s.qk_norm, f"qk_norm must be {s.qk_norm!r}")
    req(c.norm_placement == s.norm_placement, f"norm_placement must be {s.norm_placement!r}")
    req(c.scale_embeddings == s.scale_embeddings, f"scale_embeddings must be {s.scale_embeddings}")
    req(not c.attention_sinks, "attention_sinks must be False")
    if not s.softcap:
        req(c.attn_logit_softcap is None and c.final_logit_softcap is None,
            "attn_logit_softcap and final_logit_softcap must be None (no soft-capping)")
    W, types = window_pattern(c)
    if s.window == "none":
        req(W is None, "sliding_window must be None (no sliding window)")
    elif s.window == "uniform":
        req(types is None, "layer_types must window every layer or none (one sliding_window for all layers)")
    if family == "phi3":
        req(c.embd_dropout == 0, "embd_dropout must be 0 (Phi-3 has no embedding dropout)")
        req(c.rope_scaling is None, "rope_scaling must be None (Phi3Config accepts longrope only, which we lack)")
    else:
        req(c.embd_dropout == 0 and c.resid_dropout == 0, "embd_dropout and resid_dropout must be 0")


def to_hf_dict(c: Config, family: str, common: dict) -> dict:
    s = SPECS[family]
    act = "silu" if c.mlp_class_name == "LLaMAMLP" else _GELU[c.gelu_approximate]
    d = dict(model_type=family, hidden_size=c.n_embd, intermediate_size=c.intermediate_size,
             num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_query_groups,
             max_position_embeddings=c.block_size, rms_norm_eps=c.norm_eps, rope_parameters=rope_parameters(c),
             attention_dropout=c.attn_dropout, **{s.act_key: act}, **common)
    if s.free_head_dim:
        d["head_dim"] = c.head_size
    if s.bias == "llama":
        d.update(attention_bias=c.bias, mlp_bias=c.bias)
    elif family != "qwen2":
        d["attention_bias"] = False
    if s.partial_rotary:
        d["rope_parameters"]["partial_rotary_factor"] = c.rotary_percentage
    if family == "phi3":
        d.update(resid_pdrop=c.resid_dropout, embd_pdrop=0.0, original_max_position_embeddings=c.block_size)
    W, _ = window_pattern(c)
    types = layer_types(c)
    if s.window == "uniform":
        d["sliding_window"] = W
    elif s.window == "use_sliding":
        d.update(use_sliding_window=W is not None, sliding_window=W, layer_types=types)
    elif s.window == "layer_types":  # HF builds the sliding mask whatever the layers: a window no query
        d.update(sliding_window=W or c.block_size, layer_types=types)  # within block_size reaches past
    if s.softcap:
        d.update(query_pre_attn_scalar=c.head_size, attn_logit_softcapping=c.attn_logit_softcap,
                 final_logit_softcapping=c.final_logit_softcap)
    return d


def from_hf_dict(d: dict, family: str, get) -> dict:
    """Config fields (beyond the shared ones) for a family's config.json dict."""
    s = SPECS[family]
    n_head, C = d["num_attention_heads"], d["hidden_size"]
    rope = dict(d.get("rope_parameters") or {})
    head_size = get("head_dim", default=C // n_head) if s.free_head_dim else C // n_head
    pct = float(rope.get("partial_rotary_factor", get("partial_rotary_factor", default=1.0)))
    if (pct != 1.0 and not s.partial_rotary) or d.get("pretraining_tp", 1) not in (1, None):
        raise ValueError(f"{family} with partial_rotary_factor != 1 or pretraining_tp != 1 is not supported")
    act = get(s.act_key, "hidden_act", "hidden_activation", default="silu")
    mlp = "LLaMAMLP" if act == "silu" else "GemmaMLP"
    kw = dict(n_query_groups=get("num_key_value_heads", default=n_head), head_size=head_size,
              norm_class_name="RMSNorm", mlp_class_name=mlp, norm_eps=get("rms_norm_eps", default=1e-6),
              qk_norm=s.qk_norm, norm_placement=s.norm_placement, scale_embeddings=s.scale_embeddings)
    if mlp == "GemmaMLP":
        gelu = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
        if act not in gelu:
            raise ValueError(f"activation {act!r} is not supported; use silu or one of {sorted(gelu)}")
        kw["gelu_approximate"] = gelu[act]
    if pct != 1.0:
        kw["rotary_percentage"] = pct  # both sides rotate int(pct * head_size) features
    if s.bias == "llama":
        attn_bias, mlp_bias = bool(get("attention_bias", default=False)), bool(get("mlp_bias", default=False))
        if attn_bias != mlp_bias:
            raise ValueError(f"Llama attention_bias ({attn_bias}) != mlp_bias ({mlp_bias}) is not expressible: "
                             "our bias field covers both")
        kw["bias"] = attn_bias
    elif s.bias == "qkv":
        kw.update(bias=False, attn_bias=True)
    else:
        if get("attention_bias", default=False):
            raise ValueError(f"{family} with attention_bias=True (biased o_proj) is not expressible")
        kw["bias"] = False
    if family == "phi3":
        kw["resid_dropout"] = get("resid_pdrop", default=0.0)
        if get("embd_pdrop", default=0.0):
            raise ValueError("Phi-3 embd_pdrop is unused by transformers' model; set it to 0")
    if s.softcap:
        if get("query_pre_attn_scalar", default=head_size) != head_size:
            raise ValueError("Gemma 2 query_pre_attn_scalar must equal head_dim (our attention scale is "
                             "1 / sqrt(head_size))")
        # absent keys take transformers' defaults, as Gemma2Config.from_dict would
        kw.update(attn_logit_softcap=d.get("attn_logit_softcapping", 50.0),
                  final_logit_softcap=d.get("final_logit_softcapping", 30.0))
    kw.update(_windows_from_hf(d, family))
    return kw


_WINDOW_DEFAULTS = {"mistral": 4096, "qwen2": 4096, "qwen3": 4096, "gemma2": 4096, "phi3": None}


def _windows_from_hf(d: dict, family: str) -> dict:
    """sliding_window and layer_types (canonical: see window_pattern) of a family's config.json dict."""
    s, n = SPECS[family], d["num_hidden_layers"]
    if s.window == "none":
        return {}
    W = d.get("sliding_window", _WINDOW_DEFAULTS[family])
    if s.window == "uniform":
        types = ["full_attention" if W is None else "sliding_attention"] * n
    elif s.window == "use_sliding":
        if not d.get("use_sliding_window"):
            W = None
        first = d.get("max_window_layers", 28)  # Qwen2Config's rule when layer_types is absent
        types = d.get("layer_types") or ["sliding_attention" if W is not None and i >= first else "full_attention"
                                         for i in range(n)]
    else:  # Gemma2Config's default alternation starts with a sliding layer
        types = d.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    if len(types) != n:
        raise ValueError(f"{family} layer_types names {len(types)} layers, num_hidden_layers is {n}")
    if W is None:
        if "sliding_attention" in types:
            raise ValueError(f"{family} has sliding_attention layers but sliding_window is None")
        return dict(sliding_window=None, layer_types=None)
    W, types = window_pattern(Config(n_layer=n, n_head=1, n_embd=2, sliding_window=W, layer_types=tuple(types)))
    return dict(sliding_window=W, layer_types=types)


def window_pattern(c: Config) -> tuple:
    """(sliding_window, layer_types) in canonical form, a function of the model (the window of each layer):
    (None, None) when no layer is windowed, (W, None) when every layer is, else (W, layer_types)."""
    windowed = [c.window(i) is not None for i in range(c.n_layer)]
    if not any(windowed):
        return None, None
    return c.sliding_window, (None if all(windowed) else tuple(c.layer_types))


def layer_types(c: Config) -> list:
    """transformers' per-layer list: "sliding_attention" where layer i has a window, else "full_attention"."""
    return ["full_attention" if c.window(i) is None else "sliding_attention" for i in range(c.n_layer)]
    return kw


# ---------------------------------------------------------------------------------------------- weights
def layer_names(family: str, i: int) -> dict:
    """ours -> HF tensor-name prefix for layer i (norms by our module name)."""
    s, p = SPECS[family], f"model.layers.{i}."
    names = dict(proj=p + "self_attn.o_proj", mlp_proj=p + "mlp.down_proj")
    if s.fused:
        names.update(qkv=p + "self_attn.qkv_proj", fc=p + "mlp.gate_up_proj")
    else:
        names.update(q=p + "self_attn.q_proj", k=p + "self_attn.k_proj", v=p + "self_attn.v_proj",
                     fc_1=p + "mlp.gate_proj", fc_2=p + "mlp.up_proj")
    norms = {"pre": dict(norm_1="input_layernorm", norm_2="post_attention_layernorm"),
             "sandwich": dict(norm_1="input_layernorm", post_attn_norm="post_attention_layernorm",
                              norm_2="pre_feedforward_layernorm", post_mlp_norm="post_feedforward_layernorm"),
             "post": dict(post_attn_norm="post_attention_layernorm",
                          post_mlp_norm="post_feedforward_layernorm")}[s.norm_placement]
    names["norms"] = {ours: p + theirs for ours, theirs in norms.items()}
    if s.qk_norm != "none":
        names["norms"].update({"attn.q_norm": p + "self_attn.q_norm", "attn.k_norm": p + "self_attn.k_norm"})
    return names


def layer_to_hf(sd, b: str, n: dict, c: Config, family: str, out: dict) -> None:
    """Layer tensors of our state dict ``sd`` (prefix ``b``) into ``out`` under HF names ``n``."""
    q_rows, kv_rows = c.n_head * c.head_size, c.n_query_groups * c.head_size
    off = SPECS[family].norm_offset
    for ours, theirs in n["norms"].items():
        out[theirs + ".weight"] = sd[b + ours + ".weight"] - off if off else sd[b + ours + ".weight"]
    for suffix in ("weight", "bias"):
        qkv, proj = sd.get(b + "attn.qkv." + suffix), sd.get(b + "attn.proj." + suffix)
        if qkv is not None:
            if "qkv" in n:
                out[f"{n['qkv']}.{suffix}"] = qkv
            else:
                out[f"{n['q']}.{suffix}"], out[f"{n['k']}.{suffix}"], out[f"{n['v']}.{suffix}"] = \
                    qkv.split((q_rows, kv_rows, kv_rows))
        if proj is not None:
            out[f"{n['proj']}.{suffix}"] = proj
        if b + "mlp.fc_1." + suffix in sd:
            gate, up = sd[b + "mlp.fc_1." + suffix], sd[b + "mlp.fc_2." + suffix]
            if "fc" in n:
                out[f"{n['fc']}.{suffix}"] = torch.cat([gate, up])
            else:
                out[f"{n['fc_1']}.{suffix}"], out[f"{n['fc_2']}.{suffix}"] = gate, up
            out[f"{n['mlp_proj']}.{suffix}"] = sd[b + "mlp.proj." + suffix]


def layer_from_hf(take, maybe, b: str, n: dict, c: Config, family: str, out: dict) -> None:
    """The inverse of ``layer_to_hf``: HF tensors (through ``take``) into our names under ``b``."""
    s = SPECS[family]
    for ours, theirs in n["norms"].items():
        w: Tensor = take(theirs + ".weight")
        out[b + ours + ".weight"] = w + s.norm_offset if s.norm_offset else w
    for suffix in ("weight",) + (("bias",) if c.bias or c.attn_bias else ()):
        if "qkv" in n:
            out[b + "attn.qkv." + suffix] = take(f"{n['qkv']}.{suffix}")
        else:
            out[b + "attn.qkv." + suffix] = torch.cat([take(f"{n[x]}.{suffix}") for x in ("q", "k", "v")])
        if suffix == "weight" or c.bias:
            out[b + "attn.proj." + suffix] = take(f"{n['proj']}.{suffix}")
            if "fc" in n:
                out[b + "mlp.fc_1." + suffix], out[b + "mlp.fc_2." + suffix] = take(f"{n['fc']}.{suffix}").chunk(2)
            else:
                out[b + "mlp.fc_1." + suffix] = take(f"{n['fc_1']}.{suffix}")
                out[b + "mlp.fc_2." + suffix] = take(f"{n['fc_2']}.{suffix}")
            out[b + "mlp.proj." + suffix] = take(f"{n['mlp_proj']}.{suffix}")
