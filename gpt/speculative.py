"""Speculative decoding (Leviathan et al. 2023, Chen et al. 2023): a draft model proposes k tokens, the
target scores them in one forward, and accept/reject makes every committed token a sample of the
target's own (temperature / top-k / top-p) distribution.

For draft token d_j drawn from q_j, with the target's p_j: accept with probability min(1, p_j(d)/q_j(d));
at the first rejection draw from the residual norm(max(0, p_j - q_j)); if all k are accepted draw a bonus
token from p_{k+1}. Greedy (temperature 0) makes p and q one-hot, so the result is exactly greedy target
decoding whatever the draft proposes.

Batches run in lockstep: each round commits m + 1 tokens for every row, m the fewest drafts any row
accepted. A row that accepted more keeps its accepted draft d_{m+1} as token m + 1; cutting a row's
accepted run short at a point set by the other rows only re-drafts tokens, it changes no distribution.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def accepted_counts(p: Tensor, q: Tensor, drafts: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """(B,) number of leading drafts accepted: p (B, r+1, V) target, q (B, r, V) draft distributions,
    drafts (B, r) tokens drawn from q. Draft j is accepted iff u_j < p_j(d_j) / q_j(d_j), u_j ~ U[0, 1)."""
    r = drafts.size(1)
    u = torch.rand(drafts.shape, generator=generator, dtype=torch.float64, device=drafts.device)
    pd = p[:, :r].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)  # (B, r)
    qd = q.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)  # (B, r), > 0 since d_j was drawn from q_j
    accepted = u * qd < pd
    return accepted.long().cumprod(dim=-1).sum(dim=-1)


def residual(p: Tensor, q: Tensor) -> Tensor:
    """norm(max(0, p - q)) over the last dimension (p itself where p <= q everywhere, i.e. p == q)."""
    r = (p - q).clamp(min=0)
    mass = r.sum(-1, keepdim=True)
    return torch.where(mass > 0, r / mass.clamp(min=torch.finfo(r.dtype).tiny), p)


def commit_next(p: Tensor, q: Tensor, drafts: Tensor, n: Tensor, generator=None) -> tuple[int, Tensor]:
    """(m, token (B,)): m = min(n) drafts are committed for every row, then token m + 1: the residual sample
    where row n == m < r, the bonus sample from p_{r+1} where n == r, the accepted draft d_{m+1} where n > m."""
    r = drafts.size(1)
    m = int(n.min())
    if m < r:
        dist = residual(p[:, m], q[:, m])  # (B, V)
    else:
        dist = p[:, r]
    token = torch.multinomial(dist, 1, generator=generator).squeeze(-1)  # (B,)
    if m < r:
        token = torch.where(n > m, drafts[:, m], token)
    return m, token


@torch.no_grad()
def speculative(target, draft, idx: Tensor, max_new_tokens: int, k: int = 4, temperature: float = 1.0,
                top_k: Optional[int] = None, top_p: Optional[float] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """``idx`` (B, T) followed by ``max_new_tokens`` tokens distributed as ``generate(target, ...)``'s,
    drafted ``k`` at a time by ``draft`` (same vocabulary). Both models decode through fresh KV caches."""
    from .generate import check_generate_args
    from .sampling import check_sampling_args, probs

    check_generate_args(target, idx, max_new_tokens)
    check_sampling_args(temperature, top_k, top_p)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens per round) must be an int >= 1, got {k!r}")
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"draft vocab_size ({draft.config.vocab_size}) must equal the target's "
                         f"({target.config.vocab_size})")
    B, T = idx.shape
    total = T + max_new_tokens
    if total > draft.config.block_size:
        raise ValueError(f"prompt + max_new_tokens = {total} exceeds the draft's block_size={draft.config.block_size}")
    if max_new_tokens == 0:
        return idx

    def dist(logits: Tensor) -> Tensor:  # (B, n, V) logits -> (B, n, V) sampling distribution
        return probs(logits.flatten(0, -2), temperature, top_k, top_p).view(*logits.shape[:-1], -1)

    x = idx
    target.set_kv_cache(B, total, rollback=k)  # rejected drafts are re-decoded: windowed caches keep k more
    draft.set_kv_cache(B, total, rollback=k)
    try:
        c_t = c_d = 0  # positions each model has cached (tokens 0..c-1 of x)
        while x.size(1) < total:
            L = x.size(1)
            r = min(k, total - L - 1)  # drafts this round; the round commits at most r + 1 tokens
            drafts, qs = [], []
            if r > 0:
                logits = draft(x[:, c_d:], input_pos=c_d)[:, -1:]
                for j in range(r):
                    q = dist(logits)[:, 0]  # (B, V)
                    d = (q.argmax(-1, keepdim=True) if temperature == 0
                         else torch.multinomial(q, 1, generator=generator))  # (B, 1)
                    drafts.append(d.to(x.dtype))
                    qs.append(q)
                    if j + 1 < r:
                        logits = draft(drafts[-1], input_pos=L + j)
            d = torch.cat(drafts, dim=1) if drafts else x.new_zeros(B, 0)  # (B, r)
            q = torch.stack(qs, dim=1) if qs else None  # (B, r, V)
            p = dist(target(torch.cat([x[:, c_t:], d], dim=1), input_pos=c_t)[:, -(r + 1):])  # (B, r+1, V)
            if r > 0:
                n = accepted_counts(p, q, d, generator)
                m, token = commit_next(p, q, d, n, generator)
            else:
                m, token = 0, torch.multinomial(p[:, 0], 1, generator=generator).squeeze(-1)
            x = torch.cat([x, d[:, :m], token.to(x.dtype).unsqueeze(-1)], dim=1)
            c_t = L + m  # the target cached x and d_1..d_r; the first L + m are still right
            c_d = L + min(m, r - 1) if r > 0 else c_d  # the draft cached x and d_1..d_{r-1}
    finally:
        target.clear_kv_cache()
        draft.clear_kv_cache()
    return x
