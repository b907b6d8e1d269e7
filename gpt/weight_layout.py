"""Tensor layouts other implementations store our weights in, and the exact maps between them.

Every function here is a pure re-indexing (a permutation, split, concatenation, transposition or zero
padding of rows), so it is exact in any dtype and its inverse is exact too. The same maps carry
gradients back: for W' = P(W) with P a re-indexing, dL/dW = P^-1(dL/dW').

Our layout (``gpt.GPT.state_dict()``), the reference every map starts from:

* a fused ``qkv`` projection with rows [q | k | v]: n_head query heads, then n_query_groups key heads,
  then n_query_groups value heads, each head_size rows;
* query head h reads kv group h // (n_head / n_query_groups);
* RoPE pairs feature i with feature i + n/2 (rotate-half) on the first n = rope_n_elem features of each
  query and key head; the remaining features pass through;
* gated MLPs: ``fc_1`` is the gate (the activation's input), ``fc_2`` the up projection;
* ``nn.Linear`` weights are (out, in); embedding and head rows are padded to ``padded_vocab_size``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def pad_rows(t: Tensor, rows: int) -> Tensor:
    """``t`` with zero rows appended up to ``rows`` (vocabulary padding); rows beyond never reach logits."""
    if t.size(0) > rows:
        raise ValueError(f"tensor has {t.size(0)} rows, more than the {rows} it is padded to")
    if t.size(0) == rows:
        return t
    return torch.cat([t, t.new_zeros(rows - t.size(0), *t.shape[1:])])


def transpose(t: Tensor) -> Tensor:
    """(out, in) <-> (in, out): GPT-2's ``Conv1D`` stores its weight transposed; 1-d biases pass through."""
    return t.t() if t.dim() == 2 else t


def qkv_sizes(n_head: int, n_query_groups: int, head_size: int) -> tuple[int, int, int]:
    return n_head * head_size, n_query_groups * head_size, n_query_groups * head_size


def blocks_to_grouped(t: Tensor, n_head: int, n_query_groups: int, head_size: int) -> Tensor:
    """Rows [q | k | v] -> per kv group (its q_per_kv query heads, its key head, its value head).

    With n_query_groups == n_head this is GPT-NeoX's ``query_key_value`` (head, {q, k, v}, head_size);
    with fewer groups it is the per-group interleaved layout of older litgpt checkpoints.
    """
    g, rest = n_query_groups, t.shape[1:]
    q, k, v = t.split(qkv_sizes(n_head, g, head_size))
    q = q.reshape(g, n_head // g, head_size, *rest)  # (g, q_per_kv, hs, ...)
    k, v = k.reshape(g, 1, head_size, *rest), v.reshape(g, 1, head_size, *rest)
    return torch.cat([q, k, v], dim=1).reshape(t.shape)


def grouped_to_blocks(t: Tensor, n_head: int, n_query_groups: int, head_size: int) -> Tensor:
    """The inverse of :func:`blocks_to_grouped`."""
    g, rest = n_query_groups, t.shape[1:]
    per = t.reshape(g, n_head // g + 2, head_size, *rest)
    q, k, v = per[:, :-2], per[:, -2], per[:, -1]
    return torch.cat([q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)])


def half_to_interleaved(t: Tensor, n_heads: int, head_size: int, rope_n_elem: int) -> Tensor:
    """Rows of a q or k projection from rotate-half pairing (i, i + n/2) to interleaved pairing (2i, 2i+1)
    on the first ``rope_n_elem`` features of each head: the permutation Llama conversions apply (Meta's
    checkpoints rotate adjacent pairs, transformers rotates halves). Non-rotary features stay in place."""
    perm = _interleave_perm(head_size, rope_n_elem)
    return _permute_head_rows(t, n_heads, head_size, perm)


def interleaved_to_half(t: Tensor, n_heads: int, head_size: int, rope_n_elem: int) -> Tensor:
    """The inverse of :func:`half_to_interleaved`."""
    perm = torch.argsort(_interleave_perm(head_size, rope_n_elem))
    return _permute_head_rows(t, n_heads, head_size, perm)


def _interleave_perm(head_size: int, n: int) -> Tensor:
    """perm[j] = which rotate-half row lands at interleaved row j: 2i <- i, 2i+1 <- i + n/2."""
    if n % 2 or n > head_size:
        raise ValueError(f"rope_n_elem must be even and <= head_size ({head_size}), got {n}")
    h = n // 2
    rot = torch.stack([torch.arange(h), torch.arange(h) + h], dim=1).reshape(-1)
    return torch.cat([rot, torch.arange(n, head_size)])


def _permute_head_rows(t: Tensor, n_heads: int, head_size: int, perm: Tensor) -> Tensor:
    rest = t.shape[1:]
    return t.reshape(n_heads, head_size, *rest)[:, perm.to(t.device)].reshape(t.shape)
