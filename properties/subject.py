"""The implementation under test, seen through the narrow interface the properties use.

A *subject* builds a model from a ``gpt.Config`` and a seed and turns token ids into logits. Everything
else is an optional capability; a property that needs a capability the subject lacks is skipped with
the reason. Properties never touch an implementation's internals.

To verify your own model, write a factory ``make(config) -> torch.nn.Module`` whose module maps
(B, T) token ids to (B, T, vocab_size) logits, and run ``pytest --subject yourpkg.module:make``.
Subclass :class:`Subject` instead for capabilities (KV cache, dropout, ...) or a narrower config space.
"""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from gpt.config import Config
from strategies.space import MODERN_AXES, ConfigSpace

CAPABILITIES = {
    "kv_cache": "incremental decoding through a key/value cache (reset_cache, decode)",
    "positions": "explicit token positions without a cache (logits(..., input_pos=))",
    "inputs_embeds": "forward from input embeddings (embed, logits_from_embeds)",
    "dropout": "dropout that is active in train mode and seeded by torch's RNG",
    "param_count": "a closed-form parameter count from the config (param_count)",
    "save_load": "a checkpoint round trip (save, load)",
    "input_validation": "clear ValueError/TypeError on invalid configs and bad token tensors",
    "init_scale": "GPT-2 style initialisation, so the initial loss is near ln(vocab_size)",
    "low_precision": "float16/bfloat16 weights and activations",
}


class Subject:
    """Base class: override ``build`` at least; declare what else you support in ``capabilities``."""

    name: str = "custom"
    capabilities: frozenset = frozenset()
    space: ConfigSpace = ConfigSpace(backends=("sdpa",))

    def build(self, config: Config, seed: int, dtype: torch.dtype = torch.float64, device="cpu") -> nn.Module:
        raise NotImplementedError

    def logits(self, model: nn.Module, idx: Tensor, input_pos: Optional[int] = None) -> Tensor:
        """(B, T, vocab_size) logits; ``input_pos`` (capability "positions") is the first token's position."""
        return model(idx) if input_pos is None else model(idx, input_pos=input_pos)

    # capability "kv_cache"
    def reset_cache(self, model: nn.Module, batch_size: int, max_seq_length: int) -> None:
        raise NotImplementedError

    def decode(self, model: nn.Module, idx: Tensor, input_pos: int) -> Tensor:
        """Logits of the chunk ``idx`` (B, t) at positions input_pos.., reading and filling the cache."""
        raise NotImplementedError

    # capability "inputs_embeds"
    def embed(self, model: nn.Module, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def logits_from_embeds(self, model: nn.Module, embeds: Tensor) -> Tensor:
        raise NotImplementedError

    # capability "param_count"
    def param_count(self, config: Config) -> int:
        raise NotImplementedError

    # capability "save_load"
    def save(self, model: nn.Module, path: str) -> None:
        raise NotImplementedError

    def load(self, path: str, config: Config) -> nn.Module:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<subject {self.name}>"


class ModuleSubject(Subject):
    """Wraps a user factory ``make(config) -> nn.Module`` (forward(idx) -> logits)."""

    def __init__(self, factory: Callable[[Config], nn.Module], name: str,
                 capabilities=frozenset(), space: Optional[ConfigSpace] = None) -> None:
        self.factory, self.name = factory, name
        self.capabilities = frozenset(capabilities)
        self.space = space or Subject.space

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        torch.manual_seed(seed)
        return self.factory(config).to(device=device, dtype=dtype)


class GPTSubject(Subject):
    """This project's ``gpt.GPT``, with every capability."""

    capabilities = frozenset(CAPABILITIES)

    def __init__(self, backends=("math", "sdpa"), name: str = "gpt") -> None:
        self.name = name
        self.space = ConfigSpace(backends=tuple(backends), **MODERN_AXES)

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        from gpt import GPT

        torch.manual_seed(seed)
        return GPT(config).to(device=device, dtype=dtype)

    def reset_cache(self, model, batch_size, max_seq_length):
        model.set_kv_cache(batch_size, max_seq_length)

    def decode(self, model, idx, input_pos):
        return model(idx, input_pos=input_pos)

    def embed(self, model, idx):
        return model.embed(idx)

    def logits_from_embeds(self, model, embeds):
        return model(inputs_embeds=embeds)

    def param_count(self, config):
        return config.param_count()

    def save(self, model, path):
        from gpt.checkpoint import save_checkpoint

        save_checkpoint(model, path)

    def load(self, path, config):
        from gpt import GPT
        from gpt.checkpoint import checkpoint_dtype, load_checkpoint

        return load_checkpoint(path, GPT(config).to(checkpoint_dtype(path)))


def _hf(cls_name: str) -> Callable[[], Subject]:
    def make() -> Subject:
        module = importlib.import_module("properties.hf_subjects")
        return getattr(module, cls_name)()
    return make


BUILTIN: dict[str, Callable[[], Subject]] = {
    "gpt": lambda: GPTSubject(("math", "sdpa"), "gpt"),
    "gpt-math": lambda: GPTSubject(("math",), "gpt-math"),
    "gpt-sdpa": lambda: GPTSubject(("sdpa",), "gpt-sdpa"),
    "hf-gpt2": _hf("HFGPT2Subject"),
    "hf-neox": _hf("HFNeoXSubject"),
    "hf-llama": _hf("HFLlamaSubject"),
    "hf-mistral": _hf("HFMistralSubject"),
    "hf-qwen2": _hf("HFQwen2Subject"),
    "hf-qwen3": _hf("HFQwen3Subject"),
    "hf-gemma2": _hf("HFGemma2Subject"),
    "hf-olmo2": _hf("HFOlmo2Subject"),
    "hf-phi3": _hf("HFPhi3Subject"),
}
ENV_VAR = "GPT_PROPERTIES_SUBJECT"


def load_subject(spec: Optional[str] = None) -> Subject:
    """A built-in name (see ``BUILTIN``) or ``package.module:factory``.

    The factory is a Subject subclass or instance, a zero-argument function returning a Subject, or a
    function (or nn.Module class) ``make(config) -> nn.Module``.
    """
    spec = spec or os.environ.get(ENV_VAR) or "gpt"
    if spec in BUILTIN:
        return BUILTIN[spec]()
    if ":" not in spec:
        raise ValueError(f"unknown subject {spec!r}: use one of {sorted(BUILTIN)} or 'package.module:factory'")
    module_name, attr = spec.split(":", 1)
    obj = getattr(importlib.import_module(module_name), attr)
    if isinstance(obj, Subject):
        return obj
    if isinstance(obj, type) and issubclass(obj, Subject):
        return obj()
    if callable(obj):
        if not isinstance(obj, type) and _required_positional(obj) == 0:  # a function returning a Subject
            made = obj()
            if not isinstance(made, Subject):
                raise TypeError(f"{spec}() returned {type(made).__name__}, not a Subject; a module factory "
                                "takes the config: make(config) -> nn.Module")
            return made
        return ModuleSubject(obj, name=spec)
    raise TypeError(f"{spec} is neither a Subject nor a factory function")


def _required_positional(fn) -> Optional[int]:
    """How many positional parameters ``fn`` requires (None if its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in params)
