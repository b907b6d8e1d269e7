"""The models the benchmark times: ours, Hugging Face GPT-2 with the preset's shapes, or a user's factory."""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from .config import Config


def hf_incompatibility(config: Config) -> Optional[str]:
    """Why GPT2LMHeadModel cannot have this preset's shapes, or None when it can."""
    reasons = []
    if config.position_embedding != "learned":
        reasons.append("rotary positions")
    if config.norm_class_name != "LayerNorm":
        reasons.append(config.norm_class_name)
    if config.mlp_class_name != "GptNeoxMLP":
        reasons.append(config.mlp_class_name)
    if config.n_query_groups != config.n_head:
        reasons.append("grouped kv heads")
    if config.parallel_residual:
        reasons.append("parallel residual")
    if not config.tie_embeddings:
        reasons.append("untied lm_head")
    if config.n_head * config.head_size != config.n_embd:
        reasons.append("head_size * n_head != n_embd")
    if not reasons:
        return None
    return f"GPT2LMHeadModel cannot express {', '.join(reasons)} (preset {config.name!r})"


def build_hf_gpt2(config: Config) -> torch.nn.Module:
    """Hugging Face GPT2LMHeadModel with the preset's sizes, SDPA attention, random init, no hub access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from a config: nothing to download, ever
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.intermediate_size,
        activation_function="gelu_new" if config.gelu_approximate == "tanh" else "gelu",
        resid_pdrop=config.resid_dropout, embd_pdrop=config.embd_dropout, attn_pdrop=config.attn_dropout,
        layer_norm_epsilon=config.norm_eps, tie_word_embeddings=True, use_cache=False,
        bos_token_id=config.vocab_size - 1, eos_token_id=config.vocab_size - 1,  # GPT-2's 50256 may not exist
        attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(hf_config)


def load_factory(spec: str) -> Callable[[Config], torch.nn.Module]:
    """``package.module:factory`` -> the factory; it gets the preset's Config and returns an nn.Module."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"--baseline must be hf_gpt2 or package.module:factory, got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"--baseline {spec}: cannot load the factory ({e}); is its directory on PYTHONPATH?")


def takes_targets(module: torch.nn.Module) -> bool:
    """Whether ``module(idx, targets=...)`` computes its own loss (nanoGPT's convention)."""
    import inspect

    try:
        return "targets" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def build_model(impl: str, config: Config) -> torch.nn.Module:
    if impl == "gpt":
        from .model import GPT

        return GPT(config)
    if impl == "hf_gpt2":
        return build_hf_gpt2(config)
    return load_factory(impl)(config)
