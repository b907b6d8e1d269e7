"""The GPT: token (+ learned position) embedding, n_layer Blocks, final norm, language-model head."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import masks, varlen
from .attention import CausalSelfAttention
from .config import Config
from .embedding import rope_cache
from .kv_cache import KVCache
from .ring_cache import RingKVCache
from .masks import Layout
from .mlp import build_mlp
from .norm import build_norm


# token-id dtypes accepted (and widened to int64 exactly); bool, floats and unsigned > 8 bits are refused
ID_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class Block(nn.Module):
    def __init__(self, config: Config, layer: int = 0) -> None:
        super().__init__()
        pre, post = config.norm_placement != "post", config.norm_placement != "pre"
        self.norm_1 = build_norm(config, pre)
        self.attn = CausalSelfAttention(config, layer)
        self.norm_2 = None if config.shared_attention_norm else build_norm(config, pre)
        self.mlp = build_mlp(config)
        # Gemma 2's sandwich and OLMo 2's placement: each branch's output is normed inside the residual
        self.post_attn_norm = build_norm(config, post)
        self.post_mlp_norm = build_norm(config, post)
        self.drop = nn.Dropout(config.resid_dropout)
        self.parallel_residual = config.parallel_residual

    def forward(self, x: Tensor, rope=None, layout: Optional[Layout] = None) -> Tensor:
        x_normed = self.norm_1(x)
        h = self.drop(self.post_attn_norm(self.attn(x_normed, rope, layout)))
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
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
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
            # the residual projections: the MLP's, or each expert's in an MoE
            mlp_projs = [m.proj for m in block.mlp.modules() if isinstance(getattr(m, "proj", None), nn.Linear)]
            for proj in (block.attn.proj, *mlp_projs):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))
            if block.attn.sinks is not None:  # as transformers' GPT-OSS initialises them
                nn.init.normal_(block.attn.sinks, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ KV cache
    def set_kv_cache(self, batch_size: int, max_seq_length: Optional[int] = None,
                     device=None, dtype=None, rollback: int = 0) -> None:
        """Allocate a fresh (zeroed) cache in every layer; ``forward(idx, input_pos)`` then uses it.

        ``rollback``: how many slots a caller may rewind (speculative decoding re-decodes after rejected
        drafts); sliding-window layers then keep W + rollback slots instead of W.
        """
        c = self.config
        if isinstance(rollback, bool) or not isinstance(rollback, int) or rollback < 0:
            raise ValueError(f"rollback must be an int >= 0, got {rollback!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        max_seq_length = c.block_size if max_seq_length is None else max_seq_length
        if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) \
                or not 1 <= max_seq_length <= c.block_size:
            raise ValueError(f"max_seq_length must be in [1, block_size={c.block_size}], got {max_seq_length}")
        ref = self.lm_head.weight
        for block in self.blocks:
            kw = dict(device=device or ref.device, dtype=dtype or ref.dtype)
            if block.attn.window is None:
                block.attn.kv_cache = KVCache(batch_size, c.n_query_groups, max_seq_length, c.head_size, **kw)
            else:  # a sliding-window layer keeps only its last W keys
                block.attn.kv_cache = RingKVCache(batch_size, c.n_query_groups, block.attn.window, max_seq_length,
                                                  c.head_size, rollback=rollback, **kw)

    def clear_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None

    @property
    def kv_cache_length(self) -> Optional[int]:
        cache = self.blocks[0].attn.kv_cache
        return None if cache is None else cache.max_seq_length

    # ------------------------------------------------------------------ forward
    def forward(self, idx: Optional[Tensor] = None, input_pos: Union[Tensor, int, None] = None, *,
                attention_mask: Optional[Tensor] = None, position_ids: Optional[Tensor] = None,
                segment_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                return_hidden: bool = False) -> Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T).

        ``input_pos`` are the cache slots of the T tokens (an int start or a (T,) tensor); with a KV cache
        allocated they are written to and read from it, without one they only place the tokens (RoPE /
        learned positions). ``inputs_embeds`` (B, T, n_embd) replaces the token-embedding lookup.
        ``return_hidden`` returns the final-norm output (B, T, n_embd) instead of the logits.

        ``attention_mask`` (1 real token, 0 padding; left or right padding, any pad id) is (B, T), or with a
        KV cache (B, input_pos + T) covering cached and current tokens; pass it on every cached call.
        ``position_ids`` (B, T) are per-row positions, by default cumsum(attention_mask) - 1 (restarting
        in every segment). ``segment_ids`` (B, T) pack sequences into a row: a token attends only to earlier
        tokens of its own segment. Padding keys are never attended; a query that sees no key at all (padding
        with no real token before it) has attention output 0 in every layer, so its logits are finite but
        meaningless. Rules: gpt.masks.
        """
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx (token ids) and inputs_embeds, got "
                             + ("both" if idx is not None else "neither"))
        x = self.embed(idx) if inputs_embeds is None else self._check_embeds(inputs_embeds)
        B, T, _ = x.shape
        slots, end = self._positions(T, input_pos, x.device)
        cached = input_pos is not None and self.kv_cache_length is not None
        self._check_flash(attention_mask, position_ids, segment_ids)
        layout = masks.layout(B, T, slots, cached=cached, end=end, block_size=self.config.block_size,
                              attention_mask=attention_mask, position_ids=position_ids, segment_ids=segment_ids,
                              explicit_input_pos=input_pos is not None)
        if self.config.attn_backend == "flash" and layout.segment is not None:
            layout = varlen.pack_layout(layout, self._windows())  # once per forward, not per layer
        pos = layout.pos  # (B, T)
        if self.wpe is not None:
            x = x + self.wpe(pos)
        x = self.drop(x)
        rope = None
        if self.config.position_embedding == "rope":
            rope = rope_cache(pos, self.config.rope_n_elem, self.config.rope_base, x.dtype,
                              self.config.rope_scaling)
            rope = (rope[0].unsqueeze(1), rope[1].unsqueeze(1))  # (B, 1, T, half): one table per row, all heads
        for block in self.blocks:
            x = block(x, rope, layout)
        h = self.norm_f(x)  # (B, T, n_embd)
        if return_hidden:  # for a fused head + loss (gpt.fused_loss) that never materialises the logits
            if self.config.final_logit_softcap is not None:
                raise ValueError("return_hidden skips the head, so a fused head + loss would miss "
                                 "final_logit_softcap; compute the loss from the logits for this config")
            return h
        logits = self.lm_head(h)
        if self.config.final_logit_softcap is not None:  # Gemma 2: c * tanh(z / c), |logits| < c
            cap = self.config.final_logit_softcap
            logits = cap * torch.tanh(logits / cap)
        return logits[..., : self.config.vocab_size]  # padded columns are a speed detail, never output

    def _check_flash(self, attention_mask, position_ids, segment_ids) -> None:
        """flash runs causal attention over unpadded rows, or over packed rows (segment_ids, with position_ids
        that fit them) through flash-attn's varlen kernels, which attend decides exactly (gpt/varlen.py)."""
        if self.config.attn_backend != "flash":
            return
        if attention_mask is not None:
            raise ValueError("attn_backend='flash' runs causal attention over unpadded rows only: attention_mask "
                             "needs attn_backend='flex', 'sdpa' or 'math' (or pack the real tokens with segment_ids)")
        if position_ids is not None and segment_ids is None:
            raise ValueError("attn_backend='flash' takes position_ids only with segment_ids (packed rows through "
                             "flash-attn's varlen kernels); otherwise use attn_backend='flex', 'sdpa' or 'math'")

    def _windows(self) -> list:
        return [self.config.window(i) for i in range(self.config.n_layer)]

    def aux_loss(self) -> Tensor:
        """MoE: the load-balancing loss of the last forward's routing over all layers (0-dim, differentiable;
        gpt.moe.load_balancing_loss). Training: ``loss = ce(model(idx), y) + coef * model.aux_loss()``."""
        from .moe import load_balancing_loss

        if not self.config.is_moe:
            raise ValueError("aux_loss needs mlp_class_name='MoE'; this model's MLP is "
                             f"{self.config.mlp_class_name!r}")
        routings = [block.mlp.last_routing for block in self.blocks]
        if any(r is None for r in routings):
            raise ValueError("aux_loss needs a forward pass first")
        return load_balancing_loss(routings, self.config.n_experts)

    def embed(self, idx: Tensor) -> Tensor:
        """The input embeddings of ``idx``: the token embeddings, times sqrt(n_embd) (rounded to the model
        dtype) with ``scale_embeddings`` (Gemma; transformers' embedding module scales the same way, so
        ``inputs_embeds`` are scaled embeddings on both sides)."""
        self._check_idx(idx)
        x = self.wte(idx.long())  # narrower integer ids widen exactly; nn.Embedding takes int32/int64 only
        if self.config.scale_embeddings:  # Gemma: sqrt(n_embd), rounded to the weights' dtype as HF does
            return x * torch.tensor(math.sqrt(self.config.n_embd), dtype=self.wte.weight.dtype, device=idx.device)
        return x

    def _check_idx(self, idx: Tensor) -> None:
        if not isinstance(idx, Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in ID_DTYPES:
            raise TypeError(f"idx must hold integer token ids of dtype {', '.join(map(str, ID_DTYPES))}, "
                            f"got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        if idx.device != self.wte.weight.device:
            raise ValueError(f"idx is on {idx.device} but the model is on {self.wte.weight.device}")
        # reading the range syncs with the CPU: not while compiling or recording a CUDA graph (out-of-range
        # ids then hit the embedding's device-side assert instead)
        if idx.numel() and not torch.compiler.is_compiling() and not (
                idx.is_cuda and torch.cuda.is_current_stream_capturing()):
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
        cache = self.blocks[0].attn.kv_cache
        if cache is not None:
            cache.check_no_gap(input_pos, hi + 1)
        if self.config.attn_backend == "flash" and self.kv_cache_length and hi - lo + 1 != T:
            raise ValueError("attn_backend='flash' decodes contiguous chunks only (input_pos = start..start+T-1)")
        return input_pos, hi + 1

    # ------------------------------------------------------------------ sampling
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 stop_tokens=(), attention_mask: Optional[Tensor] = None) -> Tensor:
        """``gpt.generate.generate(self, ...)``: temperature 0 is greedy; see gpt.sampling for top_k/top_p."""
        from .generate import generate

        return generate(self, idx, max_new_tokens, temperature, top_k, top_p, generator, stop_tokens,
                        attention_mask=attention_mask)
