"""Token batches for a config, future-token perturbations and prompt/continuation decode plans."""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from gpt.config import Config


@st.composite
def token_batches(draw, config: Config, max_batch: int = 3, min_len: int = 1, max_len: int | None = None,
                  min_batch: int = 1):
    """A (B, T) long tensor with min_batch <= B <= max_batch, min_len <= T <= block_size, ids in [0, vocab_size)."""
    max_len = min(config.block_size, max_len or config.block_size)
    B = draw(st.integers(min_batch, max_batch), label="batch size")
    T = draw(st.integers(min(min_len, max_len), max_len), label="sequence length")
    ids = st.integers(0, config.vocab_size - 1)
    rows = draw(st.lists(st.lists(ids, min_size=T, max_size=T), min_size=B, max_size=B))
    return torch.tensor(rows, dtype=torch.long)


@st.composite
def perturbations(draw, idx: torch.Tensor, vocab_size: int):
    """(t, perturbed): tokens after position t replaced, at least one of them changed, T >= 2."""
    T = idx.size(1)
    t = draw(st.integers(0, T - 2), label="t")
    new = draw(st.lists(st.integers(0, vocab_size - 1), min_size=T - t - 1, max_size=T - t - 1), label="new tokens")
    perturbed = idx.clone()
    perturbed[:, t + 1 :] = torch.tensor(new, dtype=torch.long)
    if torch.equal(perturbed, idx):  # make sure something after t really changed
        perturbed[0, -1] = (idx[0, -1] + 1) % vocab_size
    return t, perturbed


@st.composite
def decode_plans(draw, T: int):
    """Chunk lengths summing to T: the first is the prompt, the rest are decoding steps of any size."""
    prompt = draw(st.integers(1, T), label="prompt length")
    chunks, left = [prompt], T - prompt
    while left:
        n = draw(st.integers(1, left))
        chunks.append(n)
        left -= n
    return chunks
