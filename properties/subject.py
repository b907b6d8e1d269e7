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

from gpt.config import MLPS, Config
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
    "sampler": "a token sampler with temperature/top_k/top_p (sampling_probs, sample)",
    "generate": "autoregressive generation: greedy, seeded sampling, stop tokens (generate)",
    "speculative": "speculative decoding with a draft model (speculative)",
    "sliding_window": "Config.sliding_window W: query i attends keys i - W < j <= i (and, with kv_cache, decodes past W)",
    "softcap": "Config.final_logit_softcap c: logits are c * tanh(z / c) of the uncapped model's z",
    "attention_mask": "padding masks: logits(..., attention_mask=) (B, T), 1 real / 0 padding, positions "
                      "cumsum(mask) - 1 unless given; with kv_cache, decode(..., attention_mask=) (B, input_pos + t)",
    "position_ids": "per-row positions: logits(..., position_ids=) (B, T)",
    "packing": "packed sequences: logits_packed(model, idx, segment_ids), attention within a segment only, "
               "positions restarting at 0 in each segment",
    "batched_generation": "greedy generation of a left-padded batch: generate_greedy(model, idx, n, attention_mask=)",
    "reference_weights": "loads gpt.GPT's weights for a config and maps its tensors back (load_reference, "
                         "to_reference; usually through a properties.weight_map.WeightMap)",
    "residual_projections": "names the residual branches' output projections (residual_projections)",
    "aux_loss": "an MoE load-balancing loss per forward (logits_and_aux_loss), 1 for uniform routing",
}


class Subject:
    """Base class: override ``build`` at least; declare what else you support in ``capabilities``."""

    name: str = "custom"
    capabilities: frozenset = frozenset()
    space: ConfigSpace = ConfigSpace(backends=("sdpa",))
    # False for a bare make(config) given no space: it never said which Config fields it honours (a
    # nanoGPT-style model rightly ignores norm_class_name or rope_base), so config-liveness does not apply
    declares_space: bool = True
    # Declared working precision (properties.harness.assert_close_subject derives every exactness bound
    # from it). float32_islands names the parts computed in float32 inside a float64 model (litgpt's
    # RMSNorm and RoPE tables, torchtune's RoPE, transformers' RMSNorm/RoPE/softmax upcasts), e.g.
    # frozenset({"rmsnorm", "rope"}); logits_dtype is the dtype logits come back in when it is not the
    # model's (torchtune returns float32 logits), None for the model's own dtype.
    float32_islands: frozenset = frozenset()
    logits_dtype: Optional[torch.dtype] = None

    @property
    def working_dtype(self) -> torch.dtype:
        """The lowest float precision a float64 model of this subject computes in."""
        lowest = torch.float32 if self.float32_islands else torch.float64
        if self.logits_dtype is not None and torch.finfo(self.logits_dtype).eps > torch.finfo(lowest).eps:
            lowest = self.logits_dtype
        return lowest

    def build(self, config: Config, seed: int, dtype: torch.dtype = torch.float64, device="cpu") -> nn.Module:
        raise NotImplementedError

    def logits(self, model: nn.Module, idx: Tensor, input_pos: Optional[int] = None, *,
               attention_mask: Optional[Tensor] = None, position_ids: Optional[Tensor] = None) -> Tensor:
        """(B, T, vocab_size) logits; ``input_pos`` (capability "positions") is the first token's position.

        ``attention_mask`` (B, T) (capability "attention_mask"): 1 real token, 0 padding; without
        ``position_ids`` (B, T) (capability "position_ids") a token's position is cumsum(mask) - 1.
        The default passes them on to ``model`` by keyword.
        """
        kw = {k: v for k, v in (("input_pos", input_pos), ("attention_mask", attention_mask),
                                ("position_ids", position_ids)) if v is not None}
        return model(idx, **kw)

    # capability "packing"
    def logits_packed(self, model: nn.Module, idx: Tensor, segment_ids: Tensor) -> Tensor:
        """Logits of rows holding several sequences back to back; ``segment_ids`` (B, T) are contiguous
        runs, one per sequence: a token sees only earlier tokens of its own run, positions restart at 0."""
        raise NotImplementedError

    # capability "batched_generation"
    def generate_greedy(self, model: nn.Module, idx: Tensor, max_new_tokens: int,
                        attention_mask: Optional[Tensor] = None) -> Tensor:
        """(B, T + max_new_tokens): greedy continuation of the left-padded prompts ``idx`` (B, T), exactly
        max_new_tokens tokens per row (no stop tokens); ``attention_mask`` (B, T) marks the padding."""
        raise NotImplementedError

    # capability "kv_cache"
    def reset_cache(self, model: nn.Module, batch_size: int, max_seq_length: int) -> None:
        raise NotImplementedError

    def decode(self, model: nn.Module, idx: Tensor, input_pos: int, *,
               attention_mask: Optional[Tensor] = None) -> Tensor:
        """Logits of the chunk ``idx`` (B, t) at cache slots input_pos.., reading and filling the cache;
        ``attention_mask`` (B, input_pos + t) (capability "attention_mask") covers cached and current
        tokens, and positions are then cumsum(mask) - 1."""
        raise NotImplementedError

    # capability "inputs_embeds"
    def embed(self, model: nn.Module, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def logits_from_embeds(self, model: nn.Module, embeds: Tensor) -> Tensor:
        raise NotImplementedError

    # capability "aux_loss"
    def logits_and_aux_loss(self, model: nn.Module, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, aux): aux = N sum_i f_i P_i with f summing to 1 (gpt.moe.load_balancing_loss)."""
        raise NotImplementedError

    # capability "param_count"
    def param_count(self, config: Config) -> int:
        raise NotImplementedError

    # capability "save_load"
    def save(self, model: nn.Module, path: str) -> None:
        raise NotImplementedError

    def load(self, path: str, config: Config) -> nn.Module:
        raise NotImplementedError

    # capability "sampler": temperature 0 is greedy; top_k / top_p None means no limit
    def sampling_probs(self, logits: Tensor, temperature: float, top_k=None, top_p=None) -> Tensor:
        """(B, V) float64: the distribution ``sample`` draws from for (B, V) logits."""
        raise NotImplementedError

    def sample(self, logits: Tensor, temperature: float, top_k=None, top_p=None,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """(B, 1) token ids drawn for (B, V) logits, all randomness from ``generator``."""
        raise NotImplementedError

    # capability "generate"
    def generate(self, model: nn.Module, idx: Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k=None, top_p=None, seed: int = 0, stop_tokens=()) -> Tensor:
        """(B, T + n): ``idx`` and up to ``max_new_tokens`` new tokens (fewer only once every row has emitted
        one of ``stop_tokens``; what follows a row's stop token is padding). Same seed, same result."""
        raise NotImplementedError

    # capability "speculative"
    def speculative(self, target: nn.Module, draft: nn.Module, idx: Tensor, max_new_tokens: int, k: int,
                    temperature: float = 0.0, top_k=None, top_p=None, seed: int = 0) -> Tensor:
        """(B, T + max_new_tokens), distributed as ``generate(target, ...)``, drafted k tokens at a time."""
        raise NotImplementedError

    # capability "reference_weights": a WeightMap (properties.weight_map) or an override of both methods
    weight_map = None

    def load_reference(self, model: nn.Module, state_dict, config: Config) -> None:
        """Load the reference's weights (``gpt.GPT(config).state_dict()`` names and layout) into ``model``."""
        if self.weight_map is None:
            raise NotImplementedError
        from properties.weight_map import load_into

        load_into(model, self.weight_map.to_subject(state_dict, config))

    def to_reference(self, model: nn.Module, tensors, config: Config) -> dict:
        """``tensors`` named as ``model``'s (its parameters or their gradients) in the reference's layout."""
        if self.weight_map is None:
            raise NotImplementedError
        return self.weight_map.to_reference(tensors, config)

    # capability "residual_projections"
    def residual_projections(self, model: nn.Module) -> list:
        """Names (as in ``model.named_parameters()``) of every residual branch's output projection:
        attention output and MLP down projection weights and biases; zeroed, each block is the identity."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<subject {self.name}>"


# What a plain nanoGPT-style factory expresses: n_embd = n_head * head_size, RoPE (if any) over all of an
# even head, one attention implementation. Widen it by giving the factory a ``space`` attribute
# (``make.space = ConfigSpace(backends=("sdpa",))`` is every axis), or subclass Subject.
CONVENTIONAL_SPACE = ConfigSpace(backends=("sdpa",), free_head_size=False, partial_rotary=False, odd_rotary=False)


class ModuleSubject(Subject):
    """Wraps a user factory ``make(config) -> nn.Module`` (forward(idx) -> logits). The factory may
    carry ``space``, ``capabilities``, ``float32_islands`` and ``logits_dtype`` attributes."""

    def __init__(self, factory: Callable[[Config], nn.Module], name: str,
                 capabilities=frozenset(), space: Optional[ConfigSpace] = None) -> None:
        self.factory, self.name = factory, name
        self.capabilities = frozenset(capabilities or getattr(factory, "capabilities", ()))
        self.space = space or getattr(factory, "space", None) or CONVENTIONAL_SPACE
        self.declares_space = self.space is not CONVENTIONAL_SPACE
        self.float32_islands = frozenset(getattr(factory, "float32_islands", ()))
        self.logits_dtype = getattr(factory, "logits_dtype", None)

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        torch.manual_seed(seed)
        model = self.factory(config)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}(config) returned {type(model).__name__}, not a torch.nn.Module "
                            "mapping (B, T) token ids to (B, T, vocab_size) logits")
        return model.to(device=device, dtype=dtype)


class GPTSubject(Subject):
    """This project's ``gpt.GPT``, with every capability."""

    capabilities = frozenset(CAPABILITIES)

    def __init__(self, backends=("math", "sdpa"), name: str = "gpt") -> None:
        self.name = name
        self.space = ConfigSpace(backends=tuple(backends), mlps=MLPS + ("MoE",), sliding_window=True,
                                 layer_types=True, attn_logit_softcap=True, final_logit_softcap=True,
                                 attention_sinks=True, **MODERN_AXES)

    def build(self, config, seed, dtype=torch.float64, device="cpu"):
        from gpt import GPT

        torch.manual_seed(seed)
        return GPT(config).to(device=device, dtype=dtype)

    def reset_cache(self, model, batch_size, max_seq_length):
        model.set_kv_cache(batch_size, max_seq_length)

    def decode(self, model, idx, input_pos, *, attention_mask=None):
        return model(idx, input_pos=input_pos, attention_mask=attention_mask)

    def logits_packed(self, model, idx, segment_ids):
        return model(idx, segment_ids=segment_ids)

    def generate_greedy(self, model, idx, max_new_tokens, attention_mask=None):
        from gpt.generate import generate

        return generate(model, idx, max_new_tokens, temperature=0.0, attention_mask=attention_mask)

    def embed(self, model, idx):
        return model.embed(idx)

    def logits_from_embeds(self, model, embeds):
        return model(inputs_embeds=embeds)

    def param_count(self, config):
        return config.param_count()

    def logits_and_aux_loss(self, model, idx):
        logits = model(idx)
        return logits, model.aux_loss()  # ValueError for a dense config

    def save(self, model, path):
        from gpt.checkpoint import save_checkpoint

        save_checkpoint(model, path)

    def load(self, path, config):
        from gpt import GPT
        from gpt.checkpoint import checkpoint_dtype, load_checkpoint

        return load_checkpoint(path, GPT(config).to(checkpoint_dtype(path)))

    def sampling_probs(self, logits, temperature, top_k=None, top_p=None):
        from gpt.sampling import probs

        return probs(logits, temperature, top_k, top_p)

    def sample(self, logits, temperature, top_k=None, top_p=None, generator=None):
        from gpt.sampling import sample

        return sample(logits, temperature, top_k, top_p, generator)

    def generate(self, model, idx, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=0, stop_tokens=()):
        from gpt.generate import generate

        gen = torch.Generator(device=idx.device).manual_seed(seed)
        return generate(model, idx, max_new_tokens, temperature, top_k, top_p, gen, stop_tokens)

    def speculative(self, target, draft, idx, max_new_tokens, k, temperature=0.0, top_k=None, top_p=None, seed=0):
        from gpt.speculative import speculative

        gen = torch.Generator(device=idx.device).manual_seed(seed)
        return speculative(target, draft, idx, max_new_tokens, k, temperature, top_k, top_p, gen)
    def load_reference(self, model, state_dict, config):
        model.load_state_dict(state_dict)

    def to_reference(self, model, tensors, config):
        out = dict(tensors)
        if config.tie_embeddings:  # named_parameters lists the shared tensor once
            out.setdefault("lm_head.weight", out.get("wte.weight"))
        return out

    def residual_projections(self, model):
        # attn.proj, mlp.proj, and with MoE mlp.experts.{e}.proj and mlp.shared.proj
        return [n for n, _ in model.named_parameters() if n.endswith((".proj.weight", ".proj.bias"))]


def _hf(cls_name: str, module_name: str = "properties.hf_subjects") -> Callable[[], Subject]:
    def make() -> Subject:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)()
    return make


BUILTIN: dict[str, Callable[[], Subject]] = {
    "gpt": lambda: GPTSubject(("math", "sdpa"), "gpt"),
    "gpt-math": lambda: GPTSubject(("math",), "gpt-math"),
    "gpt-sdpa": lambda: GPTSubject(("sdpa",), "gpt-sdpa"),
    "hf-gpt2": _hf("HFGPT2Subject"),
    "hf-neox": _hf("HFNeoXSubject"),
    "hf-llama": _hf("HFLlamaSubject"),
    "hf-mixtral": _hf("HFMixtralSubject", "properties.hf_moe_subjects"),
    "hf-qwen-moe": _hf("HFQwenMoESubject", "properties.hf_moe_subjects"),
    "hf-olmoe": _hf("HFOlmoeSubject", "properties.hf_moe_subjects"),
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
