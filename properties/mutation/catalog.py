"""The mutant catalog: realistic bugs of ``gpt/``, each an exact, one-place edit.

Every mutant is a bug of a kind that has shipped in public GPT code bases. Its edit names a file under
the project root, a snippet of the current source and its replacement; the snippet must occur exactly
once, else the mutant is *stale* (the code it targets was refactored) and the runner reports it as such,
never as killed. ``properties/test_mutation_catalog.py`` checks that on every default pytest run.

To add a mutant, append a ``Mutant`` below: a unique snake_case name, a bug class from
``BUG_CLASSES`` (add a class if none fits), a one-line description of the bug as it would appear in a
code base, and the smallest edit that makes it. Then run ``python -m properties.mutation --only NAME``:
if it survives, find the invariant the suite is missing and add a property for it (never a test that
knows about the mutant), or, if the mutant behaves identically on every input, do not add it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# bug class -> what it covers; the first group is the list the mutation issue requires
BUG_CLASSES: dict[str, str] = {
    "causal-mask": "causal mask off by one (diagonal included/excluded wrongly)",
    "softmax-dim": "softmax over the wrong dimension",
    "attention-scale": "missing or wrong 1/sqrt(head_size) scale",
    "rope-rotate-half": "RoPE rotate-half with the wrong sign or halves swapped",
    "rope-input-pos": "RoPE cos/sin not indexed by input_pos during cached decoding",
    "partial-rotary": "partial rotary applied to the wrong slice",
    "rope-precision": "RoPE computed in low precision",
    "kv-cache-position": "KV cache written at the wrong position",
    "kv-cache-not-cleared": "KV cache not cleared",
    "cached-prefill-mask": "cached multi-token prefill with a non-causal mask",
    "dropout-in-eval": "dropout still active in eval",
    "attention-dropout-placement": "attention dropout applied in the wrong place",
    "gqa-grouping": "GQA keys/values grouped to the wrong query heads",
    "norm-eps-or-dim": "LayerNorm/RMSNorm epsilon ignored or normalising over the wrong dimension",
    "rmsnorm-weight": "RMSNorm weight not applied",
    "residual": "residual connection dropped or doubled",
    "parallel-residual": "parallel residual computing the MLP on the post-attention stream",
    "position-embedding": "positional embedding added twice or not at all",
    "weight-tying": "weight tying broken",
    "vocab-padding": "padded vocabulary columns leaking into logits",
    "unused-bias": "a bias created but never used",
    "init-scale": "initialisation scale not applied",
    "detach": "a .detach() that silently stops gradients",
    "batch-mixing": "batch rows mixed (a reshape/transposition that mixes the batch and head dimensions)",
    # beyond the required list
    "head-split": "heads split or merged with a reshape that mixes heads and positions",
    "rope-frequency": "RoPE inverse frequencies with the wrong exponent",
    "mlp-activation": "MLP activation or gating wired wrongly",
    "final-norm": "final norm skipped",
    "kv-cache-read": "KV cache read back wrongly",
    "param-count": "closed-form parameter count disagrees with the built model",
    "qkv-layout": "fused qkv projection split in another order than the one the weights were laid out in",
    "config-ignored": "a config field silently ignored (a hard-coded value instead)",
}
REQUIRED_BUG_CLASSES: tuple[str, ...] = tuple(list(BUG_CLASSES)[:24])


@dataclass(frozen=True)
class Mutant:
    name: str
    bug_class: str
    description: str
    file: str  # relative to the project root
    original: str
    replacement: str

    def count(self, root: Path) -> int:
        """How often the original snippet occurs in ``root / file`` (0 if the file is gone)."""
        path = Path(root) / self.file
        return path.read_text().count(self.original) if path.is_file() else 0

    def apply(self, root: Path) -> bool:
        """Apply the edit in place under ``root``; False (and no change) unless it matches exactly once."""
        path = Path(root) / self.file
        if self.count(root) != 1:
            return False
        path.write_text(path.read_text().replace(self.original, self.replacement))
        return True


def _m(name, bug_class, description, file, original, replacement) -> Mutant:
    return Mutant(name, bug_class, description, f"gpt/{file}", original, replacement)


MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ attention
    _m("causal_mask_excludes_diagonal", "causal-mask",
       "math-backend causal mask built with tril(diagonal - 1): a token cannot attend to itself",
       "attention.py",
       "tril(diagonal=S - T)",
       "tril(diagonal=S - T - 1)"),
    _m("causal_mask_sees_next_token", "causal-mask",
       "math-backend causal mask built with tril(diagonal + 1): each token also sees the next one",
       "attention.py",
       "tril(diagonal=S - T)",
       "tril(diagonal=S - T + 1)"),
    _m("cached_mask_excludes_diagonal", "causal-mask",
       "cached decoding mask uses < instead of <=: a decoded token cannot attend to its own key",
       "attention.py",
       "mask = torch.arange(end, device=x.device)[None, :] <= input_pos[:, None]",
       "mask = torch.arange(end, device=x.device)[None, :] < input_pos[:, None]"),
    _m("cached_prefill_not_causal", "cached-prefill-mask",
       "cached multi-token chunks (prefill) let every query see the whole chunk, not a causal mask",
       "attention.py",
       "mask = torch.arange(end, device=x.device)[None, :] <= input_pos[:, None]",
       "mask = torch.arange(end, device=x.device)[None, :] <= input_pos[-1]"),
    _m("softmax_over_queries", "softmax-dim",
       "math-backend softmax normalises over the query dimension (dim=-2) instead of the keys",
       "attention.py",
       'return F.softmax(att, dim=-1)',
       'return F.softmax(att, dim=-2)'),
    _m("math_scale_missing", "attention-scale",
       "math-backend scores are Q K^T without the 1/sqrt(head_size) scale",
       "attention.py",
       "att = (q @ expand_kv(k, q.size(1)).transpose(-2, -1)) * scale",
       "att = q @ expand_kv(k, q.size(1)).transpose(-2, -1)"),
    _m("scale_by_model_width", "attention-scale",
       "attention scaled by 1/sqrt(n_head * head_size) (the model width) instead of 1/sqrt(head_size)",
       "attention.py",
       "scale = 1.0 / math.sqrt(q.size(-1))",
       "scale = 1.0 / math.sqrt(q.size(1) * q.size(-1))"),
    _m("gqa_tiles_groups", "gqa-grouping",
       "math backend expands kv groups with repeat (tiling) instead of repeat_interleave",
       "attention.py",
       "return kv.repeat_interleave(n_head // kv.size(1), dim=1)",
       "return kv.repeat(1, n_head // kv.size(1), 1, 1)"),
    _m("sdpa_gqa_tiles_groups", "gqa-grouping",
       "SDPA backend expands kv groups by tiling before the kernel, so query head h reads group h mod n_groups",
       "attention.py",
       "return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,",
       "return F.scaled_dot_product_attention(q, k.repeat(1, q.size(1) // k.size(1), 1, 1),"
       " v.repeat(1, q.size(1) // v.size(1), 1, 1), attn_mask=mask,"),
    _m("attention_dropout_on_output", "attention-dropout-placement",
       "math-backend attention dropout applied to the attention output instead of the probabilities",
       "attention.py",
       "return F.dropout(att, dropout_p, training=dropout_p > 0) @ expand_kv(v, q.size(1))",
       "return F.dropout(att @ expand_kv(v, q.size(1)), dropout_p, training=dropout_p > 0)"),
    _m("attention_dropout_in_eval", "dropout-in-eval",
       "attention dropout probability passed to the kernel regardless of train/eval mode",
       "attention.py",
       "dropout_p = c.attn_dropout if self.training else 0.0",
       "dropout_p = c.attn_dropout"),
    _m("merge_heads_mixes_batch", "batch-mixing",
       "head merge transposes batch and head (transpose(0, 1)) before the reshape to (B, T, C)",
       "attention.py",
       "y = y.transpose(1, 2).reshape(B, T, c.n_head * c.head_size)",
       "y = y.transpose(0, 1).reshape(B, T, c.n_head * c.head_size)"),
    _m("split_heads_without_transpose", "head-split",
       "queries split into heads with a reshape to (B, nh, T, hs) instead of view + transpose",
       "attention.py",
       "q = q.view(B, T, c.n_head, c.head_size).transpose(1, 2)",
       "q = q.reshape(B, c.n_head, T, c.head_size)"),
    _m("qkv_bias_unused", "unused-bias",
       "qkv projection computed with F.linear(x, weight): the qkv bias is created but never used",
       "attention.py",
       "q, k, v = self.qkv(x).split(",
       "q, k, v = F.linear(x, self.qkv.weight).split("),
    _m("rope_on_queries_only", "rope-rotate-half",
       "rotary embedding applied to the queries but not the keys",
       "attention.py",
       "q, k = apply_rope(q, *rope), apply_rope(k, *rope)",
       "q = apply_rope(q, *rope)"),
    # ------------------------------------------------------------------ rotary embeddings
    _m("rope_inverse_rotation", "rope-rotate-half",
       "rotate_half with the sign on the wrong half: every pair rotates by -p theta",
       "embedding.py",
       "torch.cat((xf1 * cos - xf2 * sin, xf2 * cos + xf1 * sin), dim=-1)",
       "torch.cat((xf1 * cos + xf2 * sin, xf2 * cos - xf1 * sin), dim=-1)"),
    _m("rope_not_a_rotation", "rope-rotate-half",
       "rotate_half sign error in one half only: [[cos, -sin], [-sin, cos]] is not a rotation",
       "embedding.py",
       "torch.cat((xf1 * cos - xf2 * sin, xf2 * cos + xf1 * sin), dim=-1)",
       "torch.cat((xf1 * cos - xf2 * sin, xf2 * cos - xf1 * sin), dim=-1)"),
    _m("rope_halves_swapped", "rope-rotate-half",
       "rotated halves concatenated in the wrong order",
       "embedding.py",
       "torch.cat((xf1 * cos - xf2 * sin, xf2 * cos + xf1 * sin), dim=-1)",
       "torch.cat((xf2 * cos + xf1 * sin, xf1 * cos - xf2 * sin), dim=-1)"),
    _m("rope_pass_through_first", "partial-rotary",
       "partial rotary: the rotated features are put back after the pass-through ones",
       "embedding.py",
       "return torch.cat((rotated, rest), dim=-1)",
       "return torch.cat((rest, rotated), dim=-1)"),
    _m("rope_low_precision_angles", "rope-precision",
       "inverse frequencies and angles computed in the model dtype (bf16/fp16) instead of float32",
       "embedding.py",
       "work = torch.float64 if dtype == torch.float64 else torch.float32",
       "work = dtype"),
    _m("rope_wrong_frequencies", "rope-frequency",
       "inverse frequencies base^(-i/n) instead of base^(-2i/n)",
       "embedding.py",
       "* 2 / n_elem)",
       "/ n_elem)"),
    _m("rope_cache_ignores_positions", "rope-input-pos",
       "rope_cache builds angles for 0..T-1 whatever positions it is given",
       "embedding.py",
       "angles = torch.outer(positions.to(work), inv_freq)",
       "angles = torch.outer(torch.arange(positions.numel(), device=positions.device, dtype=work), inv_freq)"),
    # ------------------------------------------------------------------ KV cache
    _m("kv_cache_writes_from_zero", "kv-cache-position",
       "each chunk's keys and values are written at cache slots 0..T-1 instead of at input_pos",
       "kv_cache.py",
       "self.k.index_copy_(2, input_pos, k.to(self.k.dtype))\n"
       "        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))",
       "self.k.index_copy_(2, input_pos - input_pos[0], k.to(self.k.dtype))\n"
       "        self.v.index_copy_(2, input_pos - input_pos[0], v.to(self.v.dtype))"),
    _m("kv_cache_returns_keys_as_values", "kv-cache-read",
       "the cache hands back its keys in place of its values (copy-paste slip)",
       "kv_cache.py",
       "return self.k[:, :, :end], self.v[:, :, :end]",
       "return self.k[:, :, :end], self.k[:, :, :end]"),
    _m("kv_cache_reused_across_sequences", "kv-cache-not-cleared",
       "set_kv_cache keeps an existing cache (its size and contents) instead of allocating a fresh one",
       "model.py",
       "        for block in self.blocks:\n"
       "            block.attn.kv_cache = KVCache(batch_size, c.n_query_groups, max_seq_length, c.head_size,\n"
       "                                          device=device or ref.device, dtype=dtype or ref.dtype)",
       "        for block in self.blocks:\n"
       "            if block.attn.kv_cache is None:\n"
       "                block.attn.kv_cache = KVCache(batch_size, c.n_query_groups, max_seq_length, c.head_size,\n"
       "                                              device=device or ref.device, dtype=dtype or ref.dtype)"),
    _m("kv_cache_never_released", "kv-cache-not-cleared",
       "clear_kv_cache only zeroes the buffers, so the model keeps decoding through a stale cache",
       "model.py",
       "            block.attn.kv_cache = None",
       "            block.attn.kv_cache.reset()"),
    # ------------------------------------------------------------------ norms
    _m("rmsnorm_eps_ignored", "norm-eps-or-dim",
       "RMSNorm adds a hard-coded 1e-6 instead of the configured epsilon",
       "norm.py",
       "+ self.eps)",
       "+ 1e-6)"),
    _m("layernorm_eps_ignored", "norm-eps-or-dim",
       "LayerNorm built without eps=config.norm_eps (torch's default 1e-5 instead)",
       "norm.py",
       "return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)",
       "return nn.LayerNorm(config.n_embd, bias=config.bias)"),
    _m("rmsnorm_over_sequence", "norm-eps-or-dim",
       "RMSNorm statistics taken over dim=1 (the sequence) instead of the features",
       "norm.py",
       "xf.pow(2).mean(dim=-1, keepdim=True)",
       "xf.pow(2).mean(dim=1, keepdim=True)"),
    _m("rmsnorm_weight_unused", "rmsnorm-weight",
       "RMSNorm returns the normalised input without multiplying by its weight",
       "norm.py",
       "return self.weight * xf.to(x.dtype)",
       "return xf.to(x.dtype)"),
    _m("layernorm_bias_always_created", "unused-bias",
       "LayerNorm always creates a bias, also for bias=False models (counted nowhere, trained as dead weight)",
       "norm.py",
       "return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)",
       "return nn.LayerNorm(config.n_embd, eps=config.norm_eps)"),
    # ------------------------------------------------------------------ MLP
    _m("gelu_approximation_ignored", "mlp-activation",
       "GPT-NeoX MLP calls exact GELU even when the config asks for the tanh approximation",
       "mlp.py",
       "F.gelu(self.fc(x), approximate=self.approximate)",
       "F.gelu(self.fc(x))"),
    _m("swiglu_gate_and_up_swapped", "mlp-activation",
       "SwiGLU applies the activation to the up projection fc_2 and gates with fc_1",
       "mlp.py",
       "self.activation(self.fc_1(x)) * self.fc_2(x)",
       "self.activation(self.fc_2(x)) * self.fc_1(x)"),
    # ------------------------------------------------------------------ block and model
    _m("attention_residual_dropped", "residual",
       "sequential block replaces the stream by the attention output: x = attn(...) instead of x + attn(...)",
       "model.py",
       "        x = x + h\n",
       "        x = h\n"),
    _m("parallel_residual_doubled", "residual",
       "parallel block adds its input twice (the attention output already carried the residual)",
       "model.py",
       "return x + h + self.drop(self.mlp(mlp_in))",
       "return 2 * x + h + self.drop(self.mlp(mlp_in))"),
    _m("parallel_mlp_reads_attention_output", "parallel-residual",
       "parallel block feeds the MLP norm_2(x + attn) instead of norm_2(x)",
       "model.py",
       "mlp_in = x_normed if self.norm_2 is None else self.norm_2(x)",
       "mlp_in = x_normed if self.norm_2 is None else self.norm_2(x + h)"),
    _m("attention_input_detached", "detach",
       "attention input detached (a leftover from a caching experiment): norm_1 gets no gradient through attention",
       "model.py",
       "h = self.drop(self.attn(x_normed, rope, input_pos, end))",
       "h = self.drop(self.attn(x_normed.detach(), rope, input_pos, end))"),
    _m("embeddings_detached", "detach",
       "token embeddings detached after the lookup: wte trains only through the tied head, if at all",
       "model.py",
       "x = self.embed(idx) if inputs_embeds is None",
       "x = self.embed(idx).detach() if inputs_embeds is None"),
    _m("position_embedding_added_twice", "position-embedding",
       "learned position embedding added twice to the token embeddings",
       "model.py",
       "x = x + self.wpe(pos)",
       "x = x + self.wpe(pos) + self.wpe(pos)"),
    _m("position_embedding_skipped_for_embeds", "position-embedding",
       "learned positions added only on the token-id path, not when inputs_embeds are given",
       "model.py",
       "if self.wpe is not None:",
       "if self.wpe is not None and inputs_embeds is None:"),
    _m("position_embedding_missing", "position-embedding",
       "learned position embedding never added",
       "model.py",
       "        if self.wpe is not None:\n            x = x + self.wpe(pos)\n",
       ""),
    _m("rope_tables_from_zero", "rope-input-pos",
       "rotary tables built for 0..T-1 instead of the chunk's positions, so cached decoding rotates wrongly",
       "model.py",
       "rope = rope_cache(pos, self.config.rope_n_elem,",
       "rope = rope_cache(torch.arange(T, device=x.device), self.config.rope_n_elem,"),
    _m("rotary_on_whole_head", "partial-rotary",
       "rotary tables built for head_size features, ignoring rotary_percentage",
       "model.py",
       "rope = rope_cache(pos, self.config.rope_n_elem,",
       "rope = rope_cache(pos, self.config.head_size,"),
    _m("embedding_dropout_in_eval", "dropout-in-eval",
       "embedding dropout called functionally with training=True",
       "model.py",
       "        x = self.drop(x)\n",
       "        x = nn.functional.dropout(x, self.config.embd_dropout, training=True)\n"),
    _m("final_norm_skipped", "final-norm",
       "the head reads the residual stream without the final norm",
       "model.py",
       "h = self.norm_f(x)  # (B, T, n_embd)",
       "h = x  # (B, T, n_embd)"),
    _m("tied_head_is_a_copy", "weight-tying",
       "lm_head gets a copy of the embedding matrix instead of sharing it",
       "model.py",
       "self.lm_head.weight = self.wte.weight",
       "self.lm_head.weight = nn.Parameter(self.wte.weight.detach().clone())"),
    _m("padded_logits_returned", "vocab-padding",
       "the padded vocabulary columns are returned with the logits",
       "model.py",
       "return logits[..., : self.config.vocab_size]",
       "return logits"),
    _m("padded_token_ids_accepted", "vocab-padding",
       "token ids are validated against padded_vocab_size, so padding rows reach the logits",
       "model.py",
       "if lo < 0 or hi >= self.config.vocab_size:",
       "if lo < 0 or hi >= self.config.padded_vocab_size:"),
    _m("residual_init_scale_missing", "init-scale",
       "residual projections initialised with std 0.02, without the 1/sqrt(2 n_layer) factor",
       "model.py",
       "std=0.02 / math.sqrt(2 * self.config.n_layer))",
       "std=0.02)"),
    _m("mlp_residual_init_scale_missing", "init-scale",
       "only the attention output projection gets the 1/sqrt(2 n_layer) residual scaling",
       "model.py",
       "for proj in (block.attn.proj, block.mlp.proj):",
       "for proj in (block.attn.proj,):"),
    _m("embeddings_default_init", "init-scale",
       "embeddings keep PyTorch's N(0, 1) default init instead of N(0, 0.02^2)",
       "model.py",
       "if isinstance(module, (nn.Linear, nn.Embedding)):",
       "if isinstance(module, nn.Linear):"),
    # ------------------------------------------------------------------ config
    _m("param_count_ignores_attn_bias", "param-count",
       "closed-form count uses `bias` for the qkv bias, missing Qwen-style attn_bias",
       "config.py",
       "self.qkv_size * int(self.qkv_bias)",
       "self.qkv_size * b"),
    # ------------------------------------------------------------------ weight layouts, config-liveness (refdiff)
    _m("rope_interleave_pairs_reversed", "rope-rotate-half",
       "rotate-half -> adjacent-pair weight permutation pairs (i + n/2, i) instead of (i, i + n/2)",
       "weight_layout.py",
       "rot = torch.stack([torch.arange(h), torch.arange(h) + h], dim=1)",
       "rot = torch.stack([torch.arange(h) + h, torch.arange(h)], dim=1)"),
    _m("grouped_qkv_order_swapped", "qkv-layout",
       "per-group (GPT-NeoX) qkv layout written as (q, v, k) instead of (q, k, v)",
       "weight_layout.py",
       "return torch.cat([q, k, v], dim=1).reshape(t.shape)",
       "return torch.cat([q, v, k], dim=1).reshape(t.shape)"),
    _m("rope_base_hardcoded", "config-ignored",
       "RoPE inverse frequencies use a hard-coded base 10000 instead of config.rope_base",
       "embedding.py",
       "inv_freq = base ** (",
       "inv_freq = 10000.0 ** ("),
]

BY_NAME: dict[str, Mutant] = {m.name: m for m in MUTANTS}


# ---------------------------------------------------------------------------------------------------
# Mutants of a third-party-style model: examples/own_model.py, run with that model as the subject
# (python -m properties.mutation --catalog example). They measure the suite's power on a user's model,
# where no check of gpt's internals applies. The first five are exact reparametrizations (mutant(W) ==
# original(Q(W)) for a permutation or sign flip Q preserving the init distribution): only the fixed-weight
# reference differential can see them.
EXAMPLE_FILE = "examples/own_model.py"
EXAMPLE_SUBJECT = "examples.own_model:OwnSubject"


def _e(name, bug_class, description, original, replacement) -> Mutant:
    return Mutant(name, bug_class, description, EXAMPLE_FILE, original, replacement)


EXAMPLE_MUTANTS: list[Mutant] = [
    _e("own_qk_swapped_in_fused_qkv", "qkv-layout",
       "fused projection split as [k | q | v] while the weights are laid out [q | k | v]",
       "q, k, v = self.qkv(x).split([c.n_head * c.head_size, c.n_query_groups * c.head_size,",
       "k, q, v = self.qkv(x).split([c.n_query_groups * c.head_size, c.n_head * c.head_size,"),
    _e("own_gqa_repeat_not_interleave", "gqa-grouping",
       "kv groups expanded with repeat (query head h reads group h mod n_groups) instead of repeat_interleave",
       "k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)",
       "k, v = k.repeat(1, groups, 1, 1), v.repeat(1, groups, 1, 1)"),
    _e("own_rope_wrong_sign", "rope-rotate-half",
       "RoPE rotates by -p * theta (the conjugate rotation)",
       "rot = torch.polar(torch.ones_like(theta), pos.double()[:, None] * theta)",
       "rot = torch.polar(torch.ones_like(theta), -pos.double()[:, None] * theta)"),
    _e("own_partial_rotary_last_features", "partial-rotary",
       "partial rotary applied to the last rope_n_elem features of each head instead of the first",
       "    z = torch.complex(x[..., :h].double(), x[..., h : 2 * h].double()) * rot\n"
       "    return torch.cat([z.real.to(x.dtype), z.imag.to(x.dtype), x[..., 2 * h :]], dim=-1)",
       "    d = x.size(-1) - 2 * h\n"
       "    z = torch.complex(x[..., d : d + h].double(), x[..., d + h :].double()) * rot\n"
       "    return torch.cat([x[..., :d], z.real.to(x.dtype), z.imag.to(x.dtype)], dim=-1)"),
    _e("own_swiglu_gate_up_swapped", "mlp-activation",
       "fused gated-MLP projection read as [up | gate] while the weights are laid out [gate | up]",
       "gate, up = h.chunk(2, dim=-1)",
       "up, gate = h.chunk(2, dim=-1)"),
    _e("own_scale_by_model_width", "attention-scale",
       "attention scores scaled by 1/sqrt(n_embd) instead of 1/sqrt(head_size)",
       "scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_size)",
       "scores = q @ k.transpose(-1, -2) / math.sqrt(c.n_embd)"),
    _e("own_attention_residual_dropped", "residual",
       "sequential block replaces the stream by the attention output instead of adding it",
       "        x = x + a\n",
       "        x = a\n"),
    _e("own_rmsnorm_ignores_eps", "norm-eps-or-dim",
       "RMSNorm divides by sqrt(mean(x^2)) without the configured eps",
       "return self.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)",
       "return self.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True))"),
    _e("own_layernorm_unbiased_variance", "norm-eps-or-dim",
       "LayerNorm normalises by the unbiased (n - 1) variance, torch.var's default",
       "x.var(-1, unbiased=False, keepdim=True)",
       "x.var(-1, keepdim=True)"),
    _e("own_gelu_approximation_ignored", "config-ignored",
       "GELU MLP always uses the exact GELU, whatever gelu_approximate says",
       "return self.down(F.gelu(h, approximate=self.approximate))",
       "return self.down(F.gelu(h))"),
    _e("own_rope_base_hardcoded", "config-ignored",
       "RoPE frequencies use a hard-coded base 10000 instead of rope_base",
       "theta = base ** (-2 * torch.arange(h, dtype=torch.float64, device=x.device) / n_elem)",
       "theta = 10000.0 ** (-2 * torch.arange(h, dtype=torch.float64, device=x.device) / n_elem)"),
    _e("own_rope_frequency_exponent", "rope-frequency",
       "RoPE inverse frequencies base^(-i/n) (the factor 2 of the exponent dropped)",
       "theta = base ** (-2 * torch.arange(h, dtype=torch.float64, device=x.device) / n_elem)",
       "theta = base ** (-torch.arange(h, dtype=torch.float64, device=x.device) / n_elem)"),
    _e("own_final_norm_skipped", "final-norm",
       "the head reads the residual stream without the final norm",
       "return self.head(self.norm(x))",
       "return self.head(x)"),
    _e("own_parallel_mlp_reads_attention_output", "parallel-residual",
       "parallel residual's MLP normalises the post-attention stream x + a instead of the block input",
       "return x + a + self.drop(self.mlp(h if self.norm_2 is None else self.norm_2(x)))",
       "return x + a + self.drop(self.mlp(h if self.norm_2 is None else self.norm_2(x + a)))"),
    _e("own_layernorm_bias_unused", "unused-bias",
       "LayerNorm creates a bias and never adds it",
       "return self.weight * x + (0 if self.bias is None else self.bias)",
       "return self.weight * x"),
    _e("own_head_not_tied", "weight-tying",
       "tie_embeddings=True but the head keeps its own weight (the tying line lost in a refactor)",
       "            self.head.weight = self.tok.weight\n",
       "            pass\n"),
]
CATALOGS: dict[str, list] = {"gpt": MUTANTS, "example": EXAMPLE_MUTANTS}
CATALOG_SUBJECTS: dict[str, str] = {"gpt": "", "example": EXAMPLE_SUBJECT}
