"""Conformance mode: what runs against a subject that is not this project's gpt, and the subject check
that runs once before any property.

- Validation: the subject imports, builds a tiny config from its own space and returns finite
  (B, T, vocab_size) logits. Otherwise the session stops with one message naming what went wrong, before
  any test is counted (a missing module used to error in every test, a NaN model to fail after minutes of
  shrinking, blamed on causality).
- Deselection: against another implementation only properties that exercise it are collected; tests of
  this repository (``repo``), of gpt internals (``gpt_internal``) and tests that never ask for the
  ``subject`` fixture are left out, and one line says how many and why. From an installed package (not
  this repository's checkout) ``repo`` tests are left out for every subject: they read the checkout.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Callable, Optional

WHY = {
    "repo": "check this repository (tooling, workflows, mutation catalog, data)",
    "gpt_internal": "check this project's gpt internals",
    "no subject": "do not exercise the subject",
}


def in_repository() -> bool:
    """Whether the suite runs from this repository's checkout (a clone or an editable install), not
    from an installed package: only a checkout has pyproject.toml next to the package."""
    return (Path(__file__).resolve().parent.parent / "pyproject.toml").is_file()


def deselect(items, conformance: bool, repository: bool):
    """(kept, [(item, why)]): the items to run, and those left out with the key of WHY."""
    kept, dropped = [], []
    for item in items:
        why = None
        if item.get_closest_marker("repo") and (conformance or not repository):
            why = "repo"
        elif conformance and item.get_closest_marker("gpt_internal"):
            why = "gpt_internal"
        elif conformance and "subject" not in getattr(item, "fixturenames", ()):
            why = "no subject"
        if why:
            dropped.append((item, why))
        else:
            kept.append(item)
    return kept, dropped


def describe_deselection(dropped, subject_name: str, conformance: bool) -> str:
    if not dropped:
        return ""
    counts = Counter(why for _, why in dropped)
    parts = "; ".join(f"{n} {WHY[why]} ({why})" for why, n in sorted(counts.items()))
    mode = f"conformance mode for subject {subject_name}" if conformance else "installed package"
    return f"gpt-properties: {mode}: {len(dropped)} tests not collected: {parts}"


# ---------------------------------------------------------------------- validation
def tiny_config(space):
    """The smallest config of ``space``: its first choice on every axis, 1 layer, 2 heads of 4 features."""
    from gpt.config import Config

    position = space.positions[0]
    placement = space.norm_placements[0]
    parallel = space.parallel_residual[0] and placement == "pre"  # sandwich and post blocks are sequential
    moe = {}
    if space.mlps[0] == "MoE":
        shared = space.n_shared_experts[0]
        moe = dict(n_experts=2, n_experts_per_token=1, moe_routing=space.moe_routings[0],
                   moe_expert_mlp=space.moe_expert_mlps[0], n_shared_experts=shared,
                   shared_expert_gate=bool(shared) and space.shared_expert_gate[0])
    return Config(**moe, vocab_size=11, padding_multiple=1, block_size=8, n_layer=1, n_head=2, n_query_groups=2,
                  n_embd=8, head_size=4, intermediate_size=32, position_embedding=position,
                  norm_class_name=space.norms[0], mlp_class_name=space.mlps[0],
                  gelu_approximate=space.gelu_approximations[0], bias=space.bias[0], attn_bias=space.attn_bias[0],
                  parallel_residual=parallel, shared_attention_norm=parallel and space.shared_attention_norm[0],
                  tie_embeddings=space.tie_embeddings[0], norm_eps=space.norm_eps[0],
                  attn_backend=space.backends[0], qk_norm=space.qk_norms[0], norm_placement=placement,
                  scale_embeddings=space.scale_embeddings[0])


def first_non_finite(t) -> str:
    """'nan at (0, 3, 7)': the first non-finite element of ``t`` and its index ('' if all finite)."""
    import torch

    bad = (~torch.isfinite(t)).nonzero()
    if not len(bad):
        return ""
    where = tuple(int(i) for i in bad[0])
    return f"{t[where].item()} at {where}"


def validate(subject) -> Optional[str]:
    """None if the subject builds a tiny model that returns finite (B, T, V) logits, else the problem."""
    import torch

    config = tiny_config(subject.space)
    what = f"subject {subject.name}"
    try:
        model = subject.build(config, seed=0, dtype=torch.float64)
    except Exception as e:  # noqa: BLE001: any failure of the user's code is the message
        return f"{what}: building a tiny model failed: {type(e).__name__}: {e}\n  config: {config!r}"
    if not isinstance(model, torch.nn.Module):
        return f"{what}: build() returned {type(model).__name__}, not a torch.nn.Module"
    idx = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    try:
        with torch.no_grad():
            logits = subject.logits(model.eval(), idx)
    except Exception as e:  # noqa: BLE001
        return f"{what}: the forward of a (2, 5) token batch failed: {type(e).__name__}: {e}\n  config: {config!r}"
    if not isinstance(logits, torch.Tensor):
        return f"{what}: the forward returned {type(logits).__name__}, not a logits tensor"
    if tuple(logits.shape) != (2, 5, config.vocab_size):
        return (f"{what}: logits of a (2, 5) batch have shape {tuple(logits.shape)}, expected "
                f"(2, 5, {config.vocab_size}) = (B, T, vocab_size)\n  config: {config!r}")
    bad = first_non_finite(logits)
    if bad:
        return f"{what}: non-finite logits on a tiny model: {bad} (batch, position, vocab)\n  config: {config!r}"
    return None


def check_subject(spec: Optional[str], load: Callable) -> Optional[str]:
    """The one message that stops the session, or None. This project's gpt subjects are not validated:
    their properties judge them, one failure per property (what the mutation runner counts)."""
    from properties.subject import ENV_VAR, GPTSubject

    shown = spec or os.environ.get(ENV_VAR) or "gpt"
    hint = ("\n  --subject takes a built-in name or package.module:factory, importable from the current "
            "directory or sys.path")
    try:
        subject = load()
    except ModuleNotFoundError as e:
        return f"gpt-properties: cannot import the subject {shown!r}: {e}{hint}"
    except Exception as e:  # noqa: BLE001
        return f"gpt-properties: cannot load the subject {shown!r}: {type(e).__name__}: {e}{hint}"
    if isinstance(subject, GPTSubject):
        return None
    problem = validate(subject)
    if problem:
        return f"gpt-properties: the subject {shown!r} is not usable, no property was run.\n  {problem}"
    return None


# ---------------------------------------------------------------------- report header
def describe_space(space) -> str:
    """The space as its differences from the full one (strategies.ConfigSpace())."""
    from strategies.space import ConfigSpace

    full = ConfigSpace()
    diff = [f"{f.name}={getattr(space, f.name)!r}" for f in fields(space)
            if getattr(space, f.name) != getattr(full, f.name)]
    return "ConfigSpace(" + ", ".join(diff) + ")" if diff else "ConfigSpace() (every axis)"


def describe_precision(subject) -> str:
    islands = sorted(getattr(subject, "float32_islands", ()) or ())
    logits = getattr(subject, "logits_dtype", None)
    parts = [f"working dtype {str(subject.working_dtype).replace('torch.', '')}"]
    if islands:
        parts.append("float32 islands " + ", ".join(islands))
    if logits is not None:
        parts.append(f"logits returned in {str(logits).replace('torch.', '')}")
    return "; ".join(parts)


def subject_header(spec, subject, profile: str) -> list:
    from properties.subject import ENV_VAR

    shown = spec or os.environ.get(ENV_VAR) or "gpt"
    from properties.cli import versions

    lines = [f"gpt-properties subject: {shown}; hypothesis profile: {profile}",
             "  versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())]
    if subject is not None:
        caps = ", ".join(sorted(subject.capabilities)) or "none"
        lines += [f"  space: {describe_space(subject.space)}", f"  capabilities: {caps}",
                  f"  precision: {describe_precision(subject)}"]
    return lines
