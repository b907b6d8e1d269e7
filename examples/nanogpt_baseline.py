"""Benchmark baseline: nanoGPT's ``model.py`` from your own checkout, with a preset's shapes.

    PYTHONPATH=/path/to/nanoGPT python -m gpt.bench --compile --fused-adamw \\
        --baseline examples.nanogpt_baseline:make

nanoGPT is not part of this repository; ``model`` is its ``model.py``. Its ``forward(idx, targets)`` computes
its own float32 cross-entropy, which the benchmark uses, so each model trains the way its users train it.
nanoGPT has no rotary positions, RMSNorm, gated MLPs or grouped kv heads: only GPT-2 shaped presets apply.
"""
from __future__ import annotations

from gpt.config import Config


def make(config: Config):
    from model import GPT, GPTConfig  # nanoGPT's model.py, found on PYTHONPATH

    return GPT(GPTConfig(block_size=config.block_size, vocab_size=config.padded_vocab_size, n_layer=config.n_layer,
                         n_head=config.n_head, n_embd=config.n_embd, dropout=0.0, bias=config.bias))
