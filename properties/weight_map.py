"""Map the reference's weights (``gpt.GPT(config).state_dict()``) into your model's names and layout.

The fixed-weight differential (``properties/test_reference_differential.py``) loads the same weights into
your model and into the reference ``gpt.GPT`` and compares logits, gradients and cached decoding. A
:class:`WeightMap` says what "the same weights" means for your model: a list of rules, each naming
reference tensors, your tensors, and an exact re-indexing between them (``gpt.weight_layout``)::

    from properties.weight_map import WeightMap, rename, nanogpt

    class MySubject(Subject):
        capabilities = frozenset({"reference_weights"})
        weight_map = nanogpt()                      # nanoGPT's names, or a list of rules of your own:
        weight_map = WeightMap([rename("wte.weight", "embed.weight"),
                                rename("blocks.{i}.attn.qkv.weight", "layers.{i}.attention.wqkv.weight"), ...])

``{i}`` in a name is the layer index (0 .. n_layer - 1). A rule applies where its reference tensors exist
for the config (a bias-free config has no biases to map); a reference tensor no rule consumes, a tensor of
your model no rule fills, or one filled that your model lacks, raises ``ValueError`` naming them.

Conventions the reference fixes (what your model must agree with once the map is applied):

* RoPE rotates pairs (i, i + n/2), rotate-half, on the *first* n = rope_n_elem = int(rotary_percentage *
  head_size) features of each query and key head, angle p * rope_base^(-2i/n) at position p; a model that
  rotates adjacent pairs (2i, 2i+1) maps q and k through :func:`rope_interleaved`.
* GQA: query head h reads key/value group h // (n_head / n_query_groups) (``repeat_interleave``).
* Attention scores are q.k / sqrt(head_size); LayerNorm and RMSNorm add ``norm_eps`` inside the root.
* Gated MLPs compute down(act(gate(x)) * up(x)); ``fc_1`` is the gate, ``fc_2`` the up projection.
* Embedding and head rows beyond ``vocab_size`` (vocabulary padding) are dropped when mapping into a
  model and zero-filled when mapping back; they never reach the logits.

Every transform is a permutation, split, join or transposition, so the inverse map also carries
gradients back (for W' = P(W), dL/dW = P^-1(dL/dW')).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from torch import Tensor

from gpt import weight_layout as wl
from gpt.config import Config

# reference tensors -> your tensors, and back; both get the config
Fn = Callable[[Sequence[Tensor], Config], list]


@dataclass(frozen=True)
class Rule:
    """Reference tensors ``reference`` become your tensors ``subject`` through ``forward``; ``backward``
    is its exact inverse. Names may contain ``{i}``, the layer index."""

    reference: tuple
    subject: tuple
    forward: Fn
    backward: Fn
    per_layer: bool = False

    def expand(self, config: Config):
        """(reference names, subject names) for every layer (or once, without ``{i}``)."""
        layers = range(config.n_layer) if self.per_layer else [None]
        for i in layers:
            fmt = (lambda n: n.format(i=i)) if i is not None else (lambda n: n)  # noqa: E731
            yield tuple(map(fmt, self.reference)), tuple(map(fmt, self.subject))


def rule(reference, subject, forward: Fn, backward: Fn) -> Rule:
    reference = (reference,) if isinstance(reference, str) else tuple(reference)
    subject = (subject,) if isinstance(subject, str) else tuple(subject)
    per_layer = any("{i}" in n for n in reference + subject)
    return Rule(reference, subject, forward, backward, per_layer)


def _one(fn: Callable[[Tensor, Config], Tensor]) -> Fn:
    return lambda ts, c: [fn(ts[0], c)]


def rename(reference: str, subject: str) -> Rule:
    """The same tensor under another name."""
    same = _one(lambda t, c: t)
    return rule(reference, subject, same, same)


def transposed(reference: str, subject: str) -> Rule:
    """GPT-2 ``Conv1D``: the weight stored (in, out)."""
    t = _one(lambda t, c: wl.transpose(t))
    return rule(reference, subject, t, t)


def vocab(reference: str, subject: str, padded: bool = False) -> Rule:
    """Embedding or head rows: your model holds ``vocab_size`` rows (``padded_vocab_size`` if ``padded``)."""
    forward = _one(lambda t, c: t if padded else t[: c.vocab_size])
    backward = _one(lambda t, c: wl.pad_rows(t, c.padded_vocab_size))
    return rule(reference, subject, forward, backward)


def split_qkv(reference: str, q: str, k: str, v: str, rope_interleave: bool = False) -> Rule:
    """Our fused [q | k | v] as three projections (Llama's q_proj, k_proj, v_proj); biases too.
    ``rope_interleave``: your RoPE rotates adjacent pairs (see :func:`rope_interleaved`)."""
    def forward(ts, c):
        q_, k_, v_ = ts[0].split(wl.qkv_sizes(c.n_head, c.n_query_groups, c.head_size))
        if rope_interleave and c.rope_n_elem:
            q_ = wl.half_to_interleaved(q_, c.n_head, c.head_size, c.rope_n_elem)
            k_ = wl.half_to_interleaved(k_, c.n_query_groups, c.head_size, c.rope_n_elem)
        return [q_, k_, v_]

    def backward(ts, c):
        q_, k_, v_ = ts
        if rope_interleave and c.rope_n_elem:
            q_ = wl.interleaved_to_half(q_, c.n_head, c.head_size, c.rope_n_elem)
            k_ = wl.interleaved_to_half(k_, c.n_query_groups, c.head_size, c.rope_n_elem)
        import torch

        return [torch.cat([q_, k_, v_])]

    return rule(reference, (q, k, v), forward, backward)


def grouped_qkv(reference: str, subject: str) -> Rule:
    """Our [q | k | v] as one projection interleaved per kv group: GPT-NeoX's ``query_key_value``
    (head, {q, k, v}, head_size) without GQA, older litgpt checkpoints with it."""
    forward = _one(lambda t, c: wl.blocks_to_grouped(t, c.n_head, c.n_query_groups, c.head_size))
    backward = _one(lambda t, c: wl.grouped_to_blocks(t, c.n_head, c.n_query_groups, c.head_size))
    return rule(reference, subject, forward, backward)


def fused_gate_up(gate: str, up: str, subject: str, order: str = "gate_up") -> Rule:
    """Our separate gate (``fc_1``) and up (``fc_2``) as one projection, [gate | up] or [up | gate]."""
    if order not in ("gate_up", "up_gate"):
        raise ValueError(f"order must be 'gate_up' or 'up_gate', got {order!r}")
    import torch

    first = order == "gate_up"
    forward = lambda ts, c: [torch.cat(ts if first else ts[::-1])]  # noqa: E731
    backward = lambda ts, c: list(ts[0].chunk(2) if first else ts[0].chunk(2)[::-1])  # noqa: E731
    return rule((gate, up), subject, forward, backward)


def rope_interleaved(reference: str, subject: str, heads: str) -> Rule:
    """A separate q or k projection (``heads``: "q" or "kv") for a RoPE rotating adjacent pairs."""
    if heads not in ("q", "kv"):
        raise ValueError(f"heads must be 'q' or 'kv', got {heads!r}")
    n = lambda c: c.n_head if heads == "q" else c.n_query_groups  # noqa: E731
    forward = _one(lambda t, c: wl.half_to_interleaved(t, n(c), c.head_size, c.rope_n_elem) if c.rope_n_elem else t)
    backward = _one(lambda t, c: wl.interleaved_to_half(t, n(c), c.head_size, c.rope_n_elem) if c.rope_n_elem else t)
    return rule(reference, subject, forward, backward)


class WeightMap:
    """Rules between the reference's state dict and yours; :meth:`to_subject` and :meth:`to_reference`."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)

    def to_subject(self, reference: Mapping[str, Tensor], config: Config) -> dict:
        """The reference's tensors under your names and layout."""
        return self._apply(reference, config, to_subject=True)

    def to_reference(self, tensors: Mapping[str, Tensor], config: Config) -> dict:
        """Your tensors (a state dict, parameters or their gradients) under the reference's names.

        Tied weights may appear once (``named_parameters`` lists a shared tensor under its first name):
        the reference's tied ``lm_head.weight`` is then the ``wte.weight`` tensor."""
        out = self._apply(tensors, config, to_subject=False)
        if config.tie_embeddings:
            if "wte.weight" in out and "lm_head.weight" not in out:
                out["lm_head.weight"] = out["wte.weight"]
            elif "lm_head.weight" in out and "wte.weight" not in out:
                out["wte.weight"] = out["lm_head.weight"]
        return out

    def _apply(self, source: Mapping[str, Tensor], config: Config, to_subject: bool) -> dict:
        out, used = {}, set()
        layout = reference_names(config)
        for r in self.rules:
            fn = r.forward if to_subject else r.backward
            for ref_names, sub_names in r.expand(config):
                if not set(ref_names) <= layout:
                    continue  # the reference has no such tensor for this config (a bias, fc_1 of a gated MLP)
                src, dst = (ref_names, sub_names) if to_subject else (sub_names, ref_names)
                present = [n in source for n in src]
                if not any(present):
                    continue  # not part of this config (a bias, a learned position table, ...)
                if not all(present):
                    missing = [n for n, p in zip(src, present) if not p]
                    raise ValueError(f"weight map: {missing} missing, needed with {[n for n in src if n in source]}")
                results = fn([source[n] for n in src], config)
                for name, t in zip(dst, results, strict=True):
                    out[name] = t
                used.update(src)
        unmapped = sorted(set(source) - used)
        if config.tie_embeddings:  # the tied second name may carry no rule of its own
            unmapped = [n for n in unmapped if not _is_tied_alias(n, source, used)]
        if unmapped:
            side = "reference" if to_subject else "subject"
            raise ValueError(f"weight map: {side} tensors no rule maps: {unmapped}")
        return out


@functools.lru_cache(maxsize=256)
def reference_names(config: Config) -> frozenset:
    """The names in ``gpt.GPT(config).state_dict()``. They depend on the structural fields only, so a
    copy of the config with every size at its minimum is built (on the CPU: building on the meta device
    costs seconds of one-time set-up), under a forked RNG so the caller's random stream is untouched."""
    import torch

    from gpt import GPT

    try:
        small = config.replace(vocab_size=2, padding_multiple=1, padded_vocab_size=2, block_size=2, n_embd=2,
                               n_head=1, head_size=2, n_query_groups=1, intermediate_size=1,
                               rotary_percentage=1.0)
    except ValueError:  # a field constrained by the sizes: build the real shapes
        small = config
    with torch.random.fork_rng(devices=[]):
        names = frozenset(GPT(small).state_dict())
    if small is not config and small.n_layer != config.n_layer:
        raise AssertionError("reference_names: the layer count must be kept")
    return names


def _is_tied_alias(name: str, source: Mapping[str, Tensor], used: set) -> bool:
    return any(source[name] is source[u] for u in used)


def load_into(model, state: Mapping[str, Tensor]) -> None:
    """Copy ``state`` (your names) into ``model``'s parameters and buffers; ValueError naming tensors that
    are missing, unexpected or of the wrong shape. Tied tensors may be given once."""
    import torch

    own = model.state_dict(keep_vars=True)
    missing = [n for n in own if n not in state and not any(own[n] is own[m] for m in state if m in own)]
    missing = [n for n in missing if not n.endswith(_NON_WEIGHT_BUFFERS)]
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"weight map does not fit the model: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, t in state.items():
            if tuple(own[name].shape) != tuple(t.shape):
                raise ValueError(f"weight map: {name} has shape {tuple(t.shape)}, the model's is "
                                 f"{tuple(own[name].shape)}")
            own[name].copy_(t)


# buffers that are not weights: HF's causal-mask and RoPE caches
_NON_WEIGHT_BUFFERS = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "original_inv_freq")


# ---------------------------------------------------------------------- ready mappings
def _common_blocks(prefix: str, norm_1: str, norm_2: str, final: str, bias: tuple = ("weight", "bias")) -> list:
    rules = []
    for ours, theirs in ((f"blocks.{{i}}.norm_1", norm_1), (f"blocks.{{i}}.norm_2", norm_2), ("norm_f", final)):
        rules += [rename(f"{ours}.{s}", f"{prefix}{theirs}.{s}") for s in bias]
    return rules


def nanogpt() -> WeightMap:
    """nanoGPT's ``model.py`` (``GPT``): ``transformer.{wte, wpe, h.{i}, ln_f}``, ``lm_head``; nn.Linear
    (out, in) weights, fused ``c_attn`` in [q | k | v] order, GELU MLP ``c_fc`` / ``c_proj``."""
    h = "transformer.h.{i}."
    rules = [vocab("wte.weight", "transformer.wte.weight"), rename("wpe.weight", "transformer.wpe.weight"),
             vocab("lm_head.weight", "lm_head.weight")]
    rules += _common_blocks("transformer.", "h.{i}.ln_1", "h.{i}.ln_2", "ln_f")
    for s in ("weight", "bias"):
        rules += [rename(f"blocks.{{i}}.attn.qkv.{s}", f"{h}attn.c_attn.{s}"),
                  rename(f"blocks.{{i}}.attn.proj.{s}", f"{h}attn.c_proj.{s}"),
                  rename(f"blocks.{{i}}.mlp.fc.{s}", f"{h}mlp.c_fc.{s}"),
                  rename(f"blocks.{{i}}.mlp.proj.{s}", f"{h}mlp.c_proj.{s}")]
    return WeightMap(rules)


def litgpt(interleaved_qkv: bool = False) -> WeightMap:
    """litgpt's ``GPT``: ``transformer.{wte, h.{i}.{norm_1, attn.qkv, attn.proj, norm_2, mlp.*}, ln_f}``,
    ``lm_head``; fused qkv as [q | k | v] (litgpt >= 0.5) or per kv group (``interleaved_qkv``, older)."""
    h = "transformer.h.{i}."
    rules = [vocab("wte.weight", "transformer.wte.weight", padded=True),
             rename("wpe.weight", "transformer.wpe.weight"), vocab("lm_head.weight", "lm_head.weight", padded=True)]
    rules += _common_blocks("transformer.", "h.{i}.norm_1", "h.{i}.norm_2", "ln_f")
    for s in ("weight", "bias"):
        qkv = (grouped_qkv if interleaved_qkv else rename)(f"blocks.{{i}}.attn.qkv.{s}", f"{h}attn.qkv.{s}")
        rules += [qkv, rename(f"blocks.{{i}}.attn.proj.{s}", f"{h}attn.proj.{s}")]
        rules += [rename(f"blocks.{{i}}.mlp.{m}.{s}", f"{h}mlp.{m}.{s}") for m in ("fc", "fc_1", "fc_2", "proj")]
    return WeightMap(rules)


class TransformersMap:
    """transformers' GPT-2 / GPT-NeoX / Llama ``*ForCausalLM`` names and layouts, through
    ``gpt.convert_hf`` (the conversion the project checks against transformers itself)."""

    def __init__(self, family: Optional[str] = None) -> None:
        self.family = family

    def to_subject(self, reference: Mapping[str, Tensor], config: Config) -> dict:
        from gpt.convert_hf import state_dict_to_hf

        out = state_dict_to_hf(reference, config, self.family)
        if config.tie_embeddings:
            out.pop("lm_head.weight", None)  # the same tensor as the embedding
        return out

    def to_reference(self, tensors: Mapping[str, Tensor], config: Config) -> dict:
        from gpt.convert_hf import state_dict_from_hf

        return state_dict_from_hf(tensors, config, self.family)


def transformers(family: Optional[str] = None) -> TransformersMap:
    """transformers-style names: ``family`` "gpt2", "gpt_neox" or "llama" (default: from the config)."""
    return TransformersMap(family)
