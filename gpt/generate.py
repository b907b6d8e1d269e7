"""Autoregressive generation through the KV cache, and the public sampling API.

::

    from gpt.generate import generate, sample, speculative
    out = generate(model, idx, 20, temperature=0.8, top_k=50, top_p=0.95,
                   generator=torch.Generator().manual_seed(0), stop_tokens=[eos])

``sample`` is pure (see ``gpt.sampling`` for its declared conventions); ``speculative`` is the standard
accept/reject speculative decoding (``gpt.speculative``). ``GPT.generate`` calls ``generate``.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from .sampling import check_sampling_args, kept_mask, probs, sample
from .speculative import speculative

__all__ = ["generate", "sample", "probs", "kept_mask", "speculative", "check_generate_args"]


def check_generate_args(model, idx: Tensor, max_new_tokens, stop_tokens=()) -> tuple[int, ...]:
    """Validate what ``generate`` and ``speculative`` share; returns the stop tokens as a tuple of ints."""
    if not isinstance(idx, Tensor) or idx.dim() != 2:
        raise ValueError(f"idx must be a (B, T) tensor of token ids, got {getattr(idx, 'shape', type(idx))}")
    if idx.size(1) < 1:
        raise ValueError("idx must hold a prompt of at least one token (T >= 1)")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    block_size = model.config.block_size
    if not 0 <= max_new_tokens <= block_size - idx.size(1):
        raise ValueError(f"max_new_tokens must be in [0, block_size - prompt length = {block_size} - {idx.size(1)}], "
                         f"got {max_new_tokens}")
    stops = tuple(stop_tokens)
    V = model.config.vocab_size
    for s in stops:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < V:
            raise ValueError(f"stop_tokens must be token ids in [0, vocab_size={V}), got {s!r}")
    return stops


def check_prompt_mask(attention_mask, idx: Tensor) -> Optional[Tensor]:
    """A left-padded batch's mask (B, T) as bools; every row must end in a real token to continue from."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, Tensor) or attention_mask.shape != idx.shape:
        raise ValueError(f"attention_mask must be a tensor of the prompt's shape {tuple(idx.shape)}, got "
                         f"{tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}")
    if attention_mask.dtype != torch.bool and attention_mask.dtype.is_floating_point:
        raise TypeError(f"attention_mask must hold 0/1 integers or bools, got dtype {attention_mask.dtype}")
    mask = attention_mask != 0
    if not bool(mask[:, -1].all()):
        rows = (~mask[:, -1]).nonzero().flatten().tolist()
        raise ValueError(f"generate needs left-padded prompts: attention_mask[:, -1] must be 1 in every row (the "
                         f"token to continue from), rows {rows[:8]} end in padding or are all padding")
    return mask


def _masked(mask: Optional[Tensor]) -> dict:
    return {} if mask is None else {"attention_mask": mask}


@torch.no_grad()
def generate(model, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
             stop_tokens: Iterable[int] = (), attention_mask: Optional[Tensor] = None) -> Tensor:
    """``idx`` (B, T) followed by up to ``max_new_tokens`` tokens drawn by ``sample``, decoding through a
    fresh KV cache (freed afterwards).

    Randomness comes from ``generator`` only (torch's global RNG when None); greedy (temperature 0) uses
    none. A row that emits one of ``stop_tokens`` keeps that token and is padded with it afterwards;
    generation ends early once every row has stopped, so the result is (B, T + n), n <= max_new_tokens.
    ``attention_mask`` (B, T) marks a left-padded batch of prompts of different lengths (0 = padding):
    each row then continues exactly as that row's unpadded prompt would alone.
    """
    stops = check_generate_args(model, idx, max_new_tokens, stop_tokens)
    check_sampling_args(temperature, top_k, top_p)
    mask = check_prompt_mask(attention_mask, idx)  # (B, T) bool or None
    B, T = idx.shape
    if max_new_tokens == 0:
        return idx
    model.set_kv_cache(B, T + max_new_tokens)
    try:
        logits = model(idx, input_pos=0, **_masked(mask))[:, -1]  # (B, V)
        out = [idx]
        stopped = torch.zeros(B, 1, dtype=torch.bool, device=idx.device)
        pad = torch.zeros(B, 1, dtype=idx.dtype, device=idx.device)
        for t in range(T, T + max_new_tokens):
            nxt = sample(logits, temperature, top_k, top_p, generator).to(idx.dtype)  # (B, 1)
            nxt = torch.where(stopped, pad, nxt)
            out.append(nxt)
            if stops:
                is_stop = torch.isin(nxt, torch.tensor(stops, device=idx.device))
                pad = torch.where(stopped, pad, nxt)  # a stopped row repeats its own stop token
                stopped = stopped | is_stop
                if bool(stopped.all()):
                    break
            if t + 1 < T + max_new_tokens:
                if mask is not None:  # HF convention: the mask covers cached and current tokens
                    mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, t + 1)
                logits = model(nxt, input_pos=t, **_masked(mask))[:, -1]
    finally:
        model.clear_kv_cache()
    return torch.cat(out, dim=1)
