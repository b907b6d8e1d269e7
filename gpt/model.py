"""The GPT: token (+ learned position) embedding, n_layer Blocks, final norm, language-model head."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .attention import CausalSelfAttention
from .config import Config
from .embedding import rope_cache
from .kv_cache import KVCache
from .mlp import build_mlp
from .norm import build_norm


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        pre, post = config.norm_placement != "post", config.norm_placement != "pre"
        self.norm_1 = build_norm(config, pre)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = None if config.shared_attention_norm else build_norm(config, pre)
        self.mlp = build_mlp(config)
        # Gemma 2's sandwich and OLMo 2's placement: each branch's output is normed inside the residual
        self.post_attn_norm = build_norm(config, post)
        self.post_mlp_norm = build_norm(config, post)
        self.drop = nn.Dropout(config.resid_dropout)
        self.parallel_residual = config.parallel_residual

    def forward(self, x: Tensor, rope=None, input_pos: Optional[Tensor] = None, end: Optional[int] = None) -> Tensor:
        x_normed = self.norm_1(x)
        h = self.drop(self.post_attn_norm(self.attn(x_normed, rope, input_pos, end)))
        if self.parallel_residual:  # GPT-NeoX / GPT-J: attention and MLP both read the block's input
            mlp_in = x_normed if self.norm_2 is None else self.norm_2(x)
            return x + h + self.drop(self.mlp(mlp_in))
        x = x + h
        return x + self.drop(self.post_mlp_norm(self.mlp(self.norm_2(x))))


class GPT(nn.Module):
    Config = Config

    def __init__(self, config: Config) -> None:
        super().__init__()
        if not isinstance(config, Config):
            raise TypeError(f"GPT needs a gpt.Config, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.position_embedding == "learned" else None
        self.drop = nn.Dropout(config.embd_dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = build_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 n_layer)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    # ------------------------------------------------------------------ KV cache
    def set_kv_cache(self, batch_size: int, max_seq_length: Optional[int] = None,
                     device=None, dtype=None) -> None:
        """Allocate a fresh (zeroed) cache in every layer; ``forward(idx, input_pos)`` then uses it."""
        c = self.config
        max_seq_length = c.block_size if max_seq_length is None else max_seq_length
        if not 1 <= max_seq_length <= c.block_size:
            raise ValueError(f"max_seq_length must be in [1, block_size={c.block_size}], got {max_seq_length}")
        ref = self.lm_head.weight
        for block in self.blocks:
            block.attn.kv_cache = KVCache(batch_size, c.n_query_groups, max_seq_length, c.head_size,
                                          device=device or ref.device, dtype=dtype or ref.dtype)

    def clear_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None

    @property
    def kv_cache_length(self) -> Optional[int]:
        cache = self.blocks[0].attn.kv_cache
        return None if cache is None else cache.max_seq_length

    # ------------------------------------------------------------------ forward
    def forward(self, idx: Optional[Tensor] = None, input_pos: Union[Tensor, int, None] = None, *,
                inputs_embeds: Optional[Tensor] = None, return_hidden: bool = False) -> Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T).

        ``input_pos`` are the positions of the T tokens (an int start or a (T,) tensor); with a KV cache
        allocated they are written to and read from it, without one they only place the tokens (RoPE /
        learned positions). ``inputs_embeds`` (B, T, n_embd) replaces the token-embedding lookup.
        ``return_hidden`` returns the final-norm output (B, T, n_embd) instead of the logits.
        """
        x = self.embed(idx) if inputs_embeds is None else self._check_embeds(inputs_embeds)
        B, T, _ = x.shape
        pos, end = self._positions(T, input_pos, x.device)
        if self.wpe is not None:
            x = x + self.wpe(pos)
        x = self.drop(x)
        rope = None
        if self.config.position_embedding == "rope":
            rope = rope_cache(pos, self.config.rope_n_elem, self.config.rope_base, x.dtype,
                              self.config.rope_scaling)
        cache_pos = pos if input_pos is not None else None
        for block in self.blocks:
            x = block(x, rope, cache_pos, end)
        h = self.norm_f(x)  # (B, T, n_embd)
        if return_hidden:  # for a fused head + loss (gpt.fused_loss) that never materialises the logits
            return h
        logits = self.lm_head(h)
        return logits[..., : self.config.vocab_size]  # padded columns are a speed detail, never output

    def embed(self, idx: Tensor) -> Tensor:
        """The input embeddings of ``idx``: the token embeddings, times sqrt(n_embd) (rounded to the model
        dtype) with ``scale_embeddings`` (Gemma; transformers' embedding module scales the same way, so
        ``inputs_embeds`` are scaled embeddings on both sides)."""
        self._check_idx(idx)
        if self.config.scale_embeddings:
            return self.wte(idx) * torch.tensor(math.sqrt(self.config.n_embd), dtype=self.wte.weight.dtype,
                                                device=idx.device)
        return self.wte(idx)

    def _check_idx(self, idx: Tensor) -> None:
        if not isinstance(idx, Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"idx must hold integer token ids (torch.long), got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        if idx.device != self.wte.weight.device:
            raise ValueError(f"idx is on {idx.device} but the model is on {self.wte.weight.device}")
        if idx.numel() and not torch.compiler.is_compiling():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token ids must be in [0, vocab_size={self.config.vocab_size}), "
                                 f"got values in [{lo}, {hi}]")

    def _check_embeds(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.size(-1) != self.config.n_embd:
            raise ValueError(f"inputs_embeds must have shape (B, T, n_embd={self.config.n_embd}), got {tuple(x.shape)}")
        if x.dtype != self.wte.weight.dtype:
            raise TypeError(f"inputs_embeds dtype {x.dtype} does not match the model's {self.wte.weight.dtype}")
        return x

    def _positions(self, T: int, input_pos, device) -> tuple[Tensor, Optional[int]]:
        """Positions (T,) of this chunk and, with a KV cache, the cache length to attend over."""
        block_size = self.config.block_size
        if T == 0:
            raise ValueError("idx must hold at least one token (T >= 1)")
        if input_pos is None:
            if T > block_size:
                raise ValueError(f"sequence length {T} exceeds block_size={block_size}")
            return torch.arange(T, device=device), None
        if isinstance(input_pos, int):
            input_pos = torch.arange(input_pos, input_pos + T, device=device)
        if not isinstance(input_pos, Tensor) or input_pos.dtype != torch.long or input_pos.shape != (T,):
            raise TypeError(f"input_pos must be an int or a torch.long tensor of shape ({T},)")
        input_pos = input_pos.to(device)
        lo, hi = int(input_pos.min()), int(input_pos.max())
        limit = self.kv_cache_length or block_size
        if lo < 0 or hi >= limit:
            what = "the KV cache length" if self.kv_cache_length else "block_size"
            raise ValueError(f"input_pos must be in [0, {what}={limit}), got positions in [{lo}, {hi}]")
        if self.config.attn_backend == "flash" and self.kv_cache_length and hi - lo + 1 != T:
            raise ValueError("attn_backend='flash' decodes contiguous chunks only (input_pos = start..start+T-1)")
        return input_pos, hi + 1

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T), decoding through the KV cache.

        temperature 0 is greedy decoding; ``top_k`` keeps the k most likely tokens.
        """
        B, T = idx.shape
        total = T + max_new_tokens
        if total > self.config.block_size:
            raise ValueError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"block_size={self.config.block_size}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.set_kv_cache(B, total)
        try:
            logits = self(idx, input_pos=0)[:, -1]
            out = [idx]
            for t in range(T, total):
                nxt = sample(logits, temperature, top_k, generator)  # (B, 1)
                out.append(nxt)
                if t + 1 < total:
                    logits = self(nxt, input_pos=t)[:, -1]
        finally:
            self.clear_kv_cache()
        return torch.cat(out, dim=1)


def sample(logits: Tensor, temperature: float, top_k: Optional[int], generator=None) -> Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
