"""Weights and configs to and from Hugging Face transformers: GPT-2, GPT-NeoX and Llama.

::

    from gpt.convert_hf import from_hf, to_hf, load_hf_checkpoint

    model = load_hf_checkpoint("path/to/checkpoint")   # config.json + *.safetensors, read locally
    hf = to_hf(model)                                     # a transformers model with the same weights
    back = from_hf(hf)                                    # and back; weights are copied exactly

The config and state-dict functions (``config_from_hf``, ``config_to_hf``, ``state_dict_from_hf``,
``state_dict_to_hf``, ``load_hf_checkpoint``) need no transformers installation; ``to_hf`` and
``from_hf`` (given an HF model object) do. Nothing is ever fetched from a hub.

Layouts (HF -> ours):

* GPT-2 ``Conv1D`` weights are stored (in, out): transposed. ``c_attn`` is already [q | k | v].
* GPT-NeoX ``query_key_value`` is interleaved per head, rows (head, {q, k, v}, head_size): regrouped
  to [q | k | v] blocks. RoPE is rotate-half over the first ``int(partial_rotary_factor * head_size)``
  features, exactly ours when that number is even.
* Llama has separate q/k/v/o projections (concatenated to [q | k | v]) and gate/up/down
  (our ``fc_1``, ``fc_2``, ``proj``); ``hidden_act`` "silu" is LLaMAMLP, a GELU is GemmaMLP.
* HF has no vocabulary padding: rows >= vocab_size of our embedding and head are dropped on export and
  zero-filled on import (they never reach the logits).

A config that a family cannot express raises ``ValueError`` naming the field.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import hf_llama_families as llama_like
from .config import Config
from .loading import common_dtype, load_into, read_tensors
from .model import GPT
from .weight_layout import blocks_to_grouped, grouped_to_blocks, pad_rows, transpose

FAMILIES = ("gpt2", "gpt_neox") + tuple(llama_like.SPECS)
_HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM",
               **{f: s.hf_class for f, s in llama_like.SPECS.items()}}
_HF_CONFIGS = {"gpt2": "GPT2Config", "gpt_neox": "GPTNeoXConfig",
               **{f: s.hf_config for f, s in llama_like.SPECS.items()}}
_GELU_TO_HF = {"none": "gelu", "tanh": "gelu_new"}
_GELU_FROM_HF = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
_BACKEND_TO_HF = {"math": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}
_BACKEND_FROM_HF = {"eager": "math", "sdpa": "sdpa", "flash_attention_2": "flash"}
# buffers some checkpoints carry that hold no weights
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
                     "rotary_emb.inv_freq")

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------- configs
def family_of(config: Config) -> str:
    """The HF family whose architecture matches ``config`` best (checked fully by ``config_to_hf``)."""
    if config.position_embedding == "learned":
        return "gpt2"
    if config.norm_class_name != "RMSNorm":
        return "gpt_neox"
    c = config
    if c.norm_placement != "pre":
        return "gemma2" if c.norm_placement == "sandwich" else "olmo2"
    if c.qk_norm != "none":
        return "qwen3"
    if c.attn_bias and not c.bias:
        return "qwen2"
    return "phi3" if c.rope_n_elem != c.head_size else "llama"


def _require(family: str, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"{_HF_CLASSES[family]} cannot express this config: {what}")


def check_expressible(config: Config, family: str) -> None:
    """Raise ValueError naming the first field of ``config`` the family cannot express."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    c = config

    def req(ok: bool, what: str) -> None:
        _require(family, ok, what)

    req(c.attn_backend in _BACKEND_TO_HF, f"attn_backend={c.attn_backend!r}")
    req(not c.shared_attention_norm, "shared_attention_norm=True (HF blocks have two norms)")
    if family in llama_like.SPECS:
        llama_like.check(c, family, req)
        return
    req(c.qk_norm == "none", "qk_norm must be 'none'")
    req(all(c.window(i) is None for i in range(c.n_layer)), "sliding_window must be None (no sliding window)")
    req(c.attn_logit_softcap is None and c.final_logit_softcap is None,
        "attn_logit_softcap and final_logit_softcap must be None (no soft-capping)")
    req(not c.attention_sinks, "attention_sinks must be False")
    req(c.norm_placement == "pre", "norm_placement must be 'pre'")
    req(not c.scale_embeddings, "scale_embeddings must be False")
    if family == "gpt2":
        req(c.position_embedding == "learned", "position_embedding must be 'learned'")
        req(c.norm_class_name == "LayerNorm", "norm_class_name must be 'LayerNorm'")
        req(c.mlp_class_name == "GptNeoxMLP", "mlp_class_name must be 'GptNeoxMLP'")
        req(c.bias, "bias must be True (Conv1D and LayerNorm always have biases)")
        req(not c.parallel_residual, "parallel_residual must be False")
    elif family == "gpt_neox":
        req(c.position_embedding == "rope", "position_embedding must be 'rope'")
        req(c.norm_class_name == "LayerNorm", "norm_class_name must be 'LayerNorm'")
        req(c.mlp_class_name == "GptNeoxMLP", "mlp_class_name must be 'GptNeoxMLP'")
        req(c.bias, "bias must be True (the MLP and LayerNorms always have biases)")
        req(c.rope_n_elem % 2 == 0, f"rotary_percentage gives an odd number of rotary features ({c.rope_n_elem})")
        req(int(c.head_size * c.rotary_percentage) == c.rope_n_elem, "rotary_percentage x head_size rounding")
        req(c.embd_dropout == c.resid_dropout,
            f"embd_dropout ({c.embd_dropout}) must equal resid_dropout ({c.resid_dropout}) (one hidden_dropout)")
    if family in ("gpt2", "gpt_neox"):
        req(c.n_query_groups == c.n_head, f"n_query_groups ({c.n_query_groups}) must equal n_head (no GQA)")
        req(c.n_head * c.head_size == c.n_embd, f"head_size ({c.head_size}) must be n_embd // n_head")


def config_to_hf(config: Config, family: Optional[str] = None, attn_implementation: Optional[str] = None):
    """A transformers config (GPT2Config, GPTNeoXConfig or LlamaConfig) for ``config``.

    ``attn_implementation`` defaults to config.attn_backend ("math" -> "eager", "sdpa" -> "sdpa").
    """
    import transformers

    family = family or family_of(config)
    kw = config_to_hf_dict(config, family)
    kw.pop("model_type")
    kw["attn_implementation"] = attn_implementation or _BACKEND_TO_HF[config.attn_backend]
    if family == "gemma2" and kw["attn_implementation"] == "sdpa":  # transformers' Gemma 2 has no sdpa path
        kw["attn_implementation"] = "eager"
    return getattr(transformers, _HF_CONFIGS[family])(**kw)


def config_to_hf_dict(config: Config, family: Optional[str] = None) -> dict:
    """The config.json fields (transformers 5 naming) of ``config`` in ``family``."""
    family = family or family_of(config)
    check_expressible(config, family)
    c = config
    common = dict(vocab_size=c.vocab_size, tie_word_embeddings=c.tie_embeddings, bos_token_id=None,
                  eos_token_id=None, pad_token_id=None, use_cache=True)
    if family == "gpt2":
        return dict(model_type="gpt2", n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                    n_head=c.n_head, n_inner=c.intermediate_size, activation_function=_GELU_TO_HF[c.gelu_approximate],
                    resid_pdrop=c.resid_dropout, embd_pdrop=c.embd_dropout, attn_pdrop=c.attn_dropout,
                    layer_norm_epsilon=c.norm_eps, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                    reorder_and_upcast_attn=False, **common)
    if family in llama_like.SPECS:
        return llama_like.to_hf_dict(c, family, common)
    rope = llama_like.rope_parameters(c)
    if family == "gpt_neox":
        rope["partial_rotary_factor"] = c.rotary_percentage
        return dict(model_type="gpt_neox", hidden_size=c.n_embd, num_hidden_layers=c.n_layer,
                    num_attention_heads=c.n_head, intermediate_size=c.intermediate_size,
                    hidden_act=_GELU_TO_HF[c.gelu_approximate], rope_parameters=rope,
                    attention_dropout=c.attn_dropout, hidden_dropout=c.resid_dropout,
                    max_position_embeddings=c.block_size, layer_norm_eps=c.norm_eps,
                    use_parallel_residual=c.parallel_residual, attention_bias=c.qkv_bias, **common)
    raise AssertionError(family)  # check_expressible refused every other family


def config_from_hf(hf_config: Any, **overrides: Any) -> Config:
    """Our ``Config`` for a transformers config object or a config.json dict (any transformers version's
    naming: rope_parameters, rope_theta / rotary_emb_base, rotary_pct / partial_rotary_factor).

    ``overrides`` set fields HF has no notion of, e.g. ``padding_multiple=64`` or ``attn_backend="math"``.
    """
    d = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    family = d.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"model_type must be one of {FAMILIES}, got {family!r}")
    get = lambda *names, default=None: next((d[n] for n in names if d.get(n) is not None), default)  # noqa: E731
    impl = d.get("_attn_implementation") or getattr(hf_config, "_attn_implementation", None)
    kw: dict = dict(vocab_size=d["vocab_size"], padding_multiple=1,
                    tie_embeddings=bool(get("tie_word_embeddings", default=family == "gpt2")),
                    attn_backend=_BACKEND_FROM_HF.get(impl, "sdpa"))
    if family == "gpt2":
        if d.get("scale_attn_by_inverse_layer_idx") or \
                d.get("scale_attn_weights") is False or d.get("add_cross_attention"):
            raise ValueError("GPT-2 options scale_attn_by_inverse_layer_idx, "
                             "scale_attn_weights=False and add_cross_attention are not supported")
        n_embd = get("n_embd", "hidden_size")
        kw.update(block_size=get("n_positions", "max_position_embeddings"),
                  n_layer=get("n_layer", "num_hidden_layers"), n_head=get("n_head", "num_attention_heads"),
                  n_embd=n_embd,
                  intermediate_size=get("n_inner", default=4 * n_embd),
                  gelu_approximate=_gelu_from_hf(get("activation_function", default="gelu_new")),
                  norm_eps=get("layer_norm_epsilon", default=1e-5), bias=True,
                  embd_dropout=get("embd_pdrop", default=0.0), attn_dropout=get("attn_pdrop", default=0.0),
                  resid_dropout=get("resid_pdrop", default=0.0))
    else:
        rope = dict(d.get("rope_parameters") or {})
        scaling = llama_like.rope_scaling_from_hf(rope, d.get("rope_scaling"))
        theta = rope.get("rope_theta", get("rope_theta", "rotary_emb_base", default=10000.0))
        n_head = d["num_attention_heads"]
        kw.update(block_size=d.get("max_position_embeddings", 2048), n_layer=d["num_hidden_layers"], n_head=n_head,
                  n_embd=d["hidden_size"], intermediate_size=d["intermediate_size"], position_embedding="rope",
                  rope_base=float(theta), attn_dropout=get("attention_dropout", default=0.0), rope_scaling=scaling)
        if family == "gpt_neox":
            pct = rope.get("partial_rotary_factor", get("rotary_pct", "partial_rotary_factor", default=0.25))
            p = get("hidden_dropout", default=0.0)
            kw.update(rotary_percentage=float(pct), gelu_approximate=_gelu_from_hf(get("hidden_act", default="gelu")),
                      norm_eps=get("layer_norm_eps", default=1e-5), bias=True, attn_bias=False,
                      parallel_residual=bool(get("use_parallel_residual", default=True)), embd_dropout=p,
                      resid_dropout=p)
            if not get("attention_bias", default=True):
                raise ValueError("GPT-NeoX with attention_bias=False (and biased MLP) is not expressible")
        else:
            kw.update(llama_like.from_hf_dict(d, family, get))
    config = Config(**{**kw, **overrides})
    check_expressible(config, family)
    return config


def _gelu_from_hf(act: str) -> str:
    if act not in _GELU_FROM_HF:
        raise ValueError(f"activation {act!r} is not supported; use one of {sorted(_GELU_FROM_HF)}")
    return _GELU_FROM_HF[act]


# ---------------------------------------------------------------------------------------------- weights
def _layer_names(family: str, i: int) -> dict:
    if family == "gpt2":
        p = f"transformer.h.{i}."
        return dict(norm_1=p + "ln_1", norm_2=p + "ln_2", qkv=p + "attn.c_attn", proj=p + "attn.c_proj",
                    fc=p + "mlp.c_fc", mlp_proj=p + "mlp.c_proj")
    if family == "gpt_neox":
        p = f"gpt_neox.layers.{i}."
        return dict(norm_1=p + "input_layernorm", norm_2=p + "post_attention_layernorm",
                    qkv=p + "attention.query_key_value", proj=p + "attention.dense", fc=p + "mlp.dense_h_to_4h",
                    mlp_proj=p + "mlp.dense_4h_to_h")
    return llama_like.layer_names(family, i)


_TOP = {"gpt2": dict(wte="transformer.wte.weight", wpe="transformer.wpe.weight", norm_f="transformer.ln_f"),
        "gpt_neox": dict(wte="gpt_neox.embed_in.weight", norm_f="gpt_neox.final_layer_norm"),
        **{f: dict(wte="model.embed_tokens.weight", norm_f="model.norm") for f in llama_like.SPECS}}


def _neox_to_blocks(t: Tensor, n_head: int, head_size: int) -> Tensor:
    """Rows (head, {q,k,v}, hs) -> ({q,k,v}, head, hs), i.e. [q | k | v]."""
    return grouped_to_blocks(t, n_head, n_head, head_size)


def _blocks_to_neox(t: Tensor, n_head: int, head_size: int) -> Tensor:
    return blocks_to_grouped(t, n_head, n_head, head_size)


def state_dict_to_hf(state_dict: Mapping[str, Tensor], config: Config, family: Optional[str] = None) -> dict:
    """Our ``GPT.state_dict()`` as the family's HF ``*ForCausalLM`` state dict (``lm_head.weight`` always
    present; with tied embeddings it is the embedding tensor itself)."""
    family = family or family_of(config)
    check_expressible(config, family)
    c, sd, V = config, state_dict, config.vocab_size
    top = _TOP[family]
    out = {top["wte"]: sd["wte.weight"][:V]}
    if family == "gpt2":
        out[top["wpe"]] = sd["wpe.weight"]
    out["lm_head.weight"] = out[top["wte"]] if c.tie_embeddings else sd["lm_head.weight"][:V]
    _copy_norm(out, top["norm_f"], sd, "norm_f", _norm_offset(family))
    for i in range(c.n_layer):
        n, b = _layer_names(family, i), f"blocks.{i}."
        if family in llama_like.SPECS:
            llama_like.layer_to_hf(sd, b, n, c, family, out)
            continue
        _copy_norm(out, n["norm_1"], sd, b + "norm_1")
        _copy_norm(out, n["norm_2"], sd, b + "norm_2")
        for suffix in ("weight", "bias"):
            qkv = sd.get(b + "attn.qkv." + suffix)
            proj = sd.get(b + "attn.proj." + suffix)
            if family == "gpt2":
                t = transpose  # Conv1D is (in, out)
                out[f"{n['qkv']}.{suffix}"] = t(qkv)
                out[f"{n['proj']}.{suffix}"] = t(proj)
                out[f"{n['fc']}.{suffix}"] = t(sd[b + "mlp.fc." + suffix])
                out[f"{n['mlp_proj']}.{suffix}"] = t(sd[b + "mlp.proj." + suffix])
            elif family == "gpt_neox":
                out[f"{n['qkv']}.{suffix}"] = _blocks_to_neox(qkv, c.n_head, c.head_size)
                out[f"{n['proj']}.{suffix}"] = proj
                out[f"{n['fc']}.{suffix}"] = sd[b + "mlp.fc." + suffix]
                out[f"{n['mlp_proj']}.{suffix}"] = sd[b + "mlp.proj." + suffix]
    return out


def state_dict_from_hf(hf_state_dict: Mapping[str, Tensor], config: Config, family: Optional[str] = None) -> dict:
    """An HF ``*ForCausalLM`` (or base-model) state dict as our ``GPT.state_dict()`` for ``config``.

    Raises ValueError listing missing or unexpected tensors. Padded vocabulary rows are zero.
    """
    family = family or family_of(config)
    check_expressible(config, family)
    c = config
    sd = _normalise_keys(dict(hf_state_dict), family)
    for key, shape in _expected_hf_shapes(config, family).items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise ValueError(f"HF tensor {key!r} has shape {tuple(sd[key].shape)}, this config needs {shape}")
    used: set = set()

    def take(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"HF state dict has no {key!r} (needed for {_HF_CLASSES[family]} with this config)")
        used.add(key)
        return sd[key]

    def maybe(key: str) -> Optional[Tensor]:
        return take(key) if key in sd else None

    top = _TOP[family]
    wte = take(top["wte"])
    _check_shape(wte, (c.vocab_size, c.n_embd), top["wte"])
    out = {"wte.weight": _pad_rows(wte, c.padded_vocab_size)}
    if family == "gpt2":
        out["wpe.weight"] = take(top["wpe"])
    if c.tie_embeddings:
        head = maybe("lm_head.weight")
        if head is not None and not torch.equal(head, wte):
            raise ValueError("tie_embeddings=True but lm_head.weight differs from the token embedding")
        out["lm_head.weight"] = out["wte.weight"]
    else:
        out["lm_head.weight"] = _pad_rows(take("lm_head.weight"), c.padded_vocab_size)
    _take_norm(out, "norm_f", top["norm_f"], take, maybe, c)
    if _norm_offset(family):
        out["norm_f.weight"] = out["norm_f.weight"] + _norm_offset(family)
    for i in range(c.n_layer):
        n, b = _layer_names(family, i), f"blocks.{i}."
        if family in llama_like.SPECS:
            llama_like.layer_from_hf(take, maybe, b, n, c, family, out)
            continue
        _take_norm(out, b + "norm_1", n["norm_1"], take, maybe, c)
        _take_norm(out, b + "norm_2", n["norm_2"], take, maybe, c)
        for suffix in ("weight", "bias"):
            if family == "gpt2":
                t = transpose
                out[b + "attn.qkv." + suffix] = t(take(f"{n['qkv']}.{suffix}"))
                out[b + "attn.proj." + suffix] = t(take(f"{n['proj']}.{suffix}"))
                out[b + "mlp.fc." + suffix] = t(take(f"{n['fc']}.{suffix}"))
                out[b + "mlp.proj." + suffix] = t(take(f"{n['mlp_proj']}.{suffix}"))
            elif family == "gpt_neox":
                out[b + "attn.qkv." + suffix] = _neox_to_blocks(take(f"{n['qkv']}.{suffix}"), c.n_head, c.head_size)
                out[b + "attn.proj." + suffix] = take(f"{n['proj']}.{suffix}")
                out[b + "mlp.fc." + suffix] = take(f"{n['fc']}.{suffix}")
                out[b + "mlp.proj." + suffix] = take(f"{n['mlp_proj']}.{suffix}")
    unexpected = sorted(k for k in set(sd) - used if not k.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"HF state dict has tensors this config does not use: {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
    return out


def _expected_hf_shapes(config: Config, family: str) -> dict:
    """HF tensor name -> shape for ``config``, from a model on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        sd = GPT(config).state_dict()
    return {k: tuple(v.shape) for k, v in state_dict_to_hf(sd, config, family).items()}


def _normalise_keys(sd: dict, family: str) -> dict:
    """Accept base-model checkpoints (no ``transformer.`` / ``gpt_neox.`` / ``model.`` prefix) and the
    pre-v5 GPT-NeoX head name ``embed_out``."""
    prefix = {"gpt2": "transformer.", "gpt_neox": "gpt_neox."}.get(family, "model.")
    out = {}
    for k, v in sd.items():
        if k == "embed_out.weight":
            k = "lm_head.weight"
        elif not k.startswith(prefix) and k != "lm_head.weight":
            k = prefix + k
        out[k] = v
    return out


def _norm_offset(family: str) -> float:
    return llama_like.SPECS[family].norm_offset if family in llama_like.SPECS else 0.0


def _copy_norm(out: dict, hf_name: str, sd: Mapping[str, Tensor], ours: str, offset: float = 0.0) -> None:
    out[hf_name + ".weight"] = sd[ours + ".weight"] - offset if offset else sd[ours + ".weight"]
    if ours + ".bias" in sd:
        out[hf_name + ".bias"] = sd[ours + ".bias"]


def _take_norm(out: dict, ours: str, hf_name: str, take, maybe, config: Config) -> None:
    out[ours + ".weight"] = take(hf_name + ".weight")
    if config.norm_class_name == "LayerNorm" and config.bias:
        out[ours + ".bias"] = take(hf_name + ".bias")


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    return pad_rows(t, rows)


def _check_shape(t: Tensor, shape: tuple, name: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, the config needs {shape}")


# ---------------------------------------------------------------------------------------------- models
def to_hf(model: GPT, family: Optional[str] = None, attn_implementation: Optional[str] = None):
    """A transformers ``*ForCausalLM`` with ``model``'s weights (copied), dtype, device and train/eval mode."""
    family = family or family_of(model.config)
    hf_config = config_to_hf(model.config, family, attn_implementation)
    sd = state_dict_to_hf(model.state_dict(), model.config, family)
    return _hf_model(model, _HF_CLASSES[family], hf_config, sd)


def _hf_model(model: GPT, class_name: str, hf_config, sd: dict):
    """transformers' ``class_name`` built from ``hf_config`` and loaded with the converted ``sd`` (every tensor
    used, lm_head only when untied), on ``model``'s device and dtype, in its train/eval mode."""
    import transformers

    ref = model.lm_head.weight
    with torch.random.fork_rng(devices=[]):  # HF's random init must not move the caller's RNG
        hf = getattr(transformers, class_name)(hf_config)
    hf = hf.to(device=ref.device, dtype=ref.dtype)
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (model.config.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"converted weights do not fit {type(hf).__name__}: missing {missing}, "
                         f"unexpected {unexpected}")
    return hf.train(model.training)


def from_hf(hf_model, **overrides: Any) -> GPT:
    """Our ``GPT`` with the weights (copied), dtype, device and train/eval mode of a transformers
    ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` or ``LlamaForCausalLM``.

    ``overrides`` are Config fields, e.g. ``padding_multiple=64``."""
    config = config_from_hf(hf_model.config, **overrides)
    ref = hf_model.get_input_embeddings().weight
    sd = state_dict_from_hf(hf_model.state_dict(), config, hf_model.config.model_type)
    return _build(config, sd, ref.dtype, ref.device).train(hf_model.training)


def load_hf_checkpoint(directory: PathLike, dtype: Optional[torch.dtype] = None, device="cpu",
                       **overrides: Any) -> GPT:
    """Our ``GPT`` from a local HF checkpoint directory: ``config.json`` plus ``model.safetensors`` (or a
    sharded ``model.safetensors.index.json``). Read from disk only (no hub, no pickle, no transformers
    needed). ``dtype`` defaults to the checkpoint's; ``overrides`` are Config fields."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{directory} has no config.json")
    hf_config = json.loads(config_path.read_text())
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"{directory} has no model.safetensors or model.safetensors.index.json "
                         "(pickled .bin checkpoints are not read)")
    hf_sd: dict = {}
    for name in files:
        if not (directory / name).is_file():
            raise ValueError(f"{directory / name} (listed in model.safetensors.index.json) does not exist")
        hf_sd.update(read_tensors(directory / name, device))
    config = config_from_hf(hf_config, **overrides)
    file_dtype = common_dtype({k: v.dtype for k, v in hf_sd.items()}, str(directory))
    try:
        sd = state_dict_from_hf(hf_sd, config, hf_config["model_type"])
    except ValueError as e:
        raise ValueError(f"{directory}: {e}") from None
    return _build(config, sd, dtype or file_dtype, device, str(directory)).eval()


def _build(config: Config, sd: dict, dtype, device, source: str = "converted weights") -> GPT:
    with torch.device("meta"):
        model = GPT(config)
    model = model.to_empty(device=device).to(dtype)
    if config.tie_embeddings:  # to_empty gives every parameter its own storage: tie them again
        model.lm_head.weight = model.wte.weight
    return load_into(model, sd, source)


# ---------------------------------------------------------------------------------------------- float64
class _Float64Everywhere(TorchFunctionMode):
    """Every float32 request (a dtype argument, ``Tensor.float()``) is served in float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is Tensor.float:
            func = Tensor.double
        args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        kwargs = {k: torch.float64 if v is torch.float32 else v for k, v in (kwargs or {}).items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def hf_float64(hf_model):
    """Run a float64 transformers model in float64 throughout (a no-op context for other dtypes).

    transformers casts to float32 in a few places, meant as upcasts for half precision: Llama's RMSNorm
    statistics (``hidden_states.to(torch.float32)``), the RoPE table (``inv_freq`` built in float32, angles
    ``position_ids.float() * inv_freq.float()``) and the eager attention softmax of GPT-NeoX and Llama
    (``softmax(..., dtype=torch.float32)``). For a float64 model they are downcasts: its logits are only
    float32-accurate (1e-9 to 1e-7 off on tiny models), which breaks any float64 comparison. Inside this
    context every float32 request becomes float64 (a ``TorchFunctionMode``), and the RoPE inverse
    frequencies (and YaRN's attention factor) are recomputed once in float64 by the model's own rope
    function, scaled ones included (llama3, yarn: their float32 arange and ramp become float64 too). HF's
    code is otherwise unchanged.
    """
    if hf_model.get_input_embeddings().weight.dtype != torch.float64:
        yield hf_model
        return
    with _Float64Everywhere():
        if not getattr(hf_model, "_float64_rope", False):
            for m in hf_model.modules():
                if hasattr(m, "inv_freq") and hasattr(m, "compute_default_rope_parameters"):
                    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

                    kind = getattr(m, "rope_type", "default")
                    fn = m.compute_default_rope_parameters if kind == "default" else ROPE_INIT_FUNCTIONS[kind]
                    inv_freq, m.attention_scaling = fn(m.config)
                    m.inv_freq = inv_freq.to(m.inv_freq.device)
                    m.original_inv_freq = m.inv_freq.clone()
                if hasattr(m, "scalar_embed_scale") and hasattr(m, "embed_scale"):  # Gemma's sqrt(hidden_size)
                    m.embed_scale = torch.tensor(m.scalar_embed_scale, dtype=torch.float64, device=m.embed_scale.device)
            hf_model._float64_rope = True
        yield hf_model


# Mixtral / Qwen2-MoE / OLMoE live in their own module (gpt/convert_moe.py); re-exported here
from .convert_moe import (  # noqa: E402,F401
    MOE_FAMILIES, moe_config_from_hf, moe_config_to_hf, moe_from_hf, moe_state_dict_from_hf, moe_state_dict_to_hf,
    moe_to_hf,
)
