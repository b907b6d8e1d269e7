"""Hugging Face transformers models as subjects with random weights: GPT-2, GPT-NeoX, Llama, Mistral, Qwen2,
Qwen3, Gemma 2, OLMo 2 and Phi-3.

Each subject builds the transformers ``*ForCausalLM`` for a drawn ``Config`` (through
``gpt.convert_hf.config_to_hf``) with HF's own random initialisation under ``torch.manual_seed(seed)``,
runs HF's forward with ``attn_implementation`` "eager" for ``attn_backend="math"`` and "sdpa" for "sdpa",
and decodes through HF's own ``DynamicCache``. Nothing of our ``gpt.GPT`` is used.

Each family's ``space`` draws only configs it can express; every restriction below states why.

Float64: transformers computes Llama's RMSNorm statistics, the RoPE table and the eager softmax of
GPT-NeoX and Llama in float32 whatever the model dtype (upcasts meant for half precision), so a float64
HF model is only float32-accurate there. The float64 properties compare results to 1e-13 and would flag
that, so by default a float64 model runs under ``gpt.convert_hf.hf_float64`` (float32 requests served
in float64; HF's code otherwise unchanged). ``raw_gpt2`` / ``raw_neox`` / ``raw_llama`` are the same
subjects without it (``--subject properties.hf_subjects:raw_llama``): they declare those float32 islands
(``Subject.float32_islands``), so the exactness bounds follow float32 there (properties.harness).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor, nn

from gpt.config import Config
from gpt.convert_hf import config_to_hf, hf_float64
from gpt.hf_llama_families import SPECS
from properties.subject import Subject
from strategies.space import ConfigSpace

HF_CAPABILITIES = frozenset({"kv_cache", "positions", "inputs_embeds", "dropout", "param_count", "init_scale",
                             "low_precision", "sampler", "generate", "attention_mask", "position_ids", "packing",
                             "batched_generation", "reference_weights", "residual_projections"})
# attention_mask / position_ids: every *ForCausalLM takes both; HF derives no positions from the mask in
# forward (only generate does), so the adapter passes cumsum(mask) - 1 itself, as generate would.
# packing: transformers 5 builds a block-diagonal mask from position_ids that restart (masking_utils.
# find_packed_sequence_indices) when no attention_mask and no cache are given: the padding-free path.
# batched_generation: HF's own generate with a left-padded batch and its attention mask.
# not claimed: "save_load" (the checkpoint property needs a load that refuses a mismatched gpt Config by
# field name, which from_pretrained does not do) and "input_validation" (HF raises IndexError or nothing
# for out-of-range ids and over-long sequences, not errors naming the problem).
# "sampler" is transformers' own logits warpers (Temperature, TopK, TopP) then softmax and a multinomial draw;
# "generate" is ``model.generate``. Not claimed: "speculative" (assisted generation runs batch size 1 only and
# draws from torch's global RNG, which the lockstep-batched distribution property cannot use).


class HFSubject(Subject):
    family: str = ""
    hf_class: str = ""
    capabilities = HF_CAPABILITIES

    hf_float32_islands: frozenset = frozenset()  # what HF computes in float32 inside a float64 model
    # the output projections of the residual branches, per family (attention output, MLP down projection)
    residual_suffixes: tuple = ()

    def __init__(self, exact_float64: bool = True) -> None:
        self.exact_float64 = exact_float64
        if not exact_float64:  # HF as it is: declared, so the bounds follow float32 there
            self.name = self.name + "-raw"
            self.float32_islands = self.hf_float32_islands
        from properties.weight_map import transformers

        self.weight_map = transformers(self.family)  # gpt.convert_hf's conversion, checked against HF

    def residual_projections(self, model) -> list:
        return [n for n, _ in model.named_parameters() if n.endswith(self.residual_suffixes)]

    # ------------------------------------------------------------------ build
    def build(self, config: Config, seed: int, dtype=torch.float64, device="cpu") -> nn.Module:
        import transformers

        hf_config = config_to_hf(config, self.family)  # attn_implementation from config.attn_backend
        torch.manual_seed(seed)
        model = getattr(transformers, self.hf_class)(hf_config)  # HF's own init, float32, then cast
        return model.to(device=device, dtype=dtype)

    def _numerics(self, model):
        return hf_float64(model) if self.exact_float64 else contextlib.nullcontext()

    # ------------------------------------------------------------------ forward
    def logits(self, model, idx: Tensor, input_pos: Optional[int] = None, *, attention_mask=None,
               position_ids=None) -> Tensor:
        kw = {}
        if input_pos is not None:
            kw["position_ids"] = _positions(input_pos, idx.size(1), idx.device)
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
            kw["position_ids"] = mask_positions(attention_mask)
        if position_ids is not None:
            kw["position_ids"] = position_ids
        with self._numerics(model):
            return model(input_ids=idx, use_cache=False, **kw).logits

    def logits_packed(self, model, idx: Tensor, segment_ids: Tensor) -> Tensor:
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        index = torch.arange(idx.size(1), device=idx.device).expand_as(segment_ids)
        first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # (B, T) run start
        with self._numerics(model):  # restarting position_ids without a mask: HF's padding-free packing
            return model(input_ids=idx, position_ids=index - first, use_cache=False).logits

    def generate_greedy(self, model, idx: Tensor, max_new_tokens: int, attention_mask=None) -> Tensor:
        from transformers import GenerationConfig

        # no eos: HF's configs carry default eos ids (Llama's is 2) that would end rows early
        gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                               eos_token_id=None, pad_token_id=0, bos_token_id=None)
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        with self._numerics(model):
            return model.generate(input_ids=idx, attention_mask=attention_mask, generation_config=gen)

    def reset_cache(self, model, batch_size: int, max_seq_length: int) -> None:
        from transformers import DynamicCache

        try:
            cache = DynamicCache(config=model.config)
        except TypeError:  # transformers 4
            cache = DynamicCache()
        model._subject_cache = (cache, batch_size, max_seq_length)

    def decode(self, model, idx: Tensor, input_pos: int, *, attention_mask=None) -> Tensor:
        state = getattr(model, "_subject_cache", None)
        if state is None:
            raise ValueError("decode needs reset_cache first")
        cache, batch_size, max_seq_length = state
        T = idx.size(1)
        if cache.get_seq_length() != input_pos:
            raise ValueError(f"DynamicCache appends: input_pos must be {cache.get_seq_length()}, got {input_pos}")
        if idx.size(0) != batch_size or input_pos + T > max_seq_length:
            raise ValueError(f"chunk of shape {tuple(idx.shape)} at {input_pos} does not fit the cache "
                             f"({batch_size} x {max_seq_length})")
        kw = {"position_ids": _positions(input_pos, T, idx.device)}
        if attention_mask is not None:
            kw = {"attention_mask": attention_mask, "position_ids": mask_positions(attention_mask)[:, -T:]}
        with self._numerics(model):
            out = model(input_ids=idx, use_cache=True, **{_cache_kwarg(model): cache}, **kw)
        return out.logits

    def embed(self, model, idx: Tensor) -> Tensor:
        return model.get_input_embeddings()(idx)

    def logits_from_embeds(self, model, embeds: Tensor) -> Tensor:
        with self._numerics(model):
            return model(inputs_embeds=embeds, use_cache=False).logits


    # ------------------------------------------------------------------ sampling and generation
    def sampling_probs(self, logits, temperature, top_k=None, top_p=None):
        if temperature == 0:  # do_sample=False: greedy search, argmax (lowest index on ties)
            return torch.zeros_like(logits, dtype=torch.float64).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return torch.softmax(_warp(logits.double(), temperature, top_k, top_p), dim=-1)

    def sample(self, logits, temperature, top_k=None, top_p=None, generator=None):
        if temperature == 0:
            return logits.argmax(-1, keepdim=True)
        return torch.multinomial(self.sampling_probs(logits, temperature, top_k, top_p), 1, generator=generator)

    def generate(self, model, idx, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=0, stop_tokens=()):
        if max_new_tokens == 0:  # HF refuses max_new_tokens=0; the interface's answer is the prompt itself
            return idx
        stops = list(stop_tokens)
        kw = dict(do_sample=False) if temperature == 0 else dict(
            do_sample=True, temperature=float(temperature), top_k=top_k or 0, top_p=1.0 if top_p is None else top_p)
        torch.manual_seed(seed)  # HF samples from torch's global RNG
        with self._numerics(model):
            return model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=max_new_tokens,
                                  min_new_tokens=0, eos_token_id=stops or None,
                                  pad_token_id=stops[0] if stops else 0, num_beams=1, **kw)


def _warp(scores: Tensor, temperature: float, top_k, top_p) -> Tensor:
    """transformers' sampling warpers, in generate's order (temperature, top-k, top-p)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None and top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores
def mask_positions(attention_mask: Tensor) -> Tensor:
    """cumsum(mask) - 1 per row, padding before the first real token at 0 (as HF's generate derives them)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _positions(start: int, T: int, device) -> Tensor:
    return torch.arange(start, start + T, device=device).unsqueeze(0)


def _cache_kwarg(model) -> str:  # transformers 5 renamed past_key_values to cache
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class HFGPT2Subject(HFSubject):
    """``GPT2LMHeadModel``: learned positions, LayerNorm, GELU MLP (exact or tanh), sequential residual."""

    name = "hf-gpt2"
    family, hf_class = "gpt2", "GPT2LMHeadModel"
    residual_suffixes = tuple(f".{m}.c_proj.{s}" for m in ("attn", "mlp") for s in ("weight", "bias"))
    space = ConfigSpace(
        positions=("learned",), norms=("LayerNorm",), mlps=("GptNeoxMLP",),
        bias=(True,),  # Conv1D and LayerNorm always carry biases
        attn_bias=(False,),  # redundant: with bias=True the qkv projection is biased anyway
        parallel_residual=(False,), shared_attention_norm=(False,),
        gqa=False, free_head_size=False,  # one head_dim = n_embd // n_head, as many kv heads as heads
        backends=("math", "sdpa"),
    )

    def param_count(self, config: Config) -> int:
        """wte (unpadded) + wpe + per layer (2 LayerNorms, c_attn, c_proj, c_fc, mlp.c_proj) + ln_f + head."""
        C, I, V, L = config.n_embd, config.intermediate_size, config.vocab_size, config.n_layer
        layer = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C)
        return V * C + config.block_size * C + L * layer + 2 * C + (0 if config.tie_embeddings else V * C)


class HFNeoXSubject(HFSubject):
    """``GPTNeoXForCausalLM``: rotary on a fraction of each head, LayerNorm, parallel or sequential residual."""

    name = "hf-neox"
    family, hf_class = "gpt_neox", "GPTNeoXForCausalLM"
    hf_float32_islands = frozenset({"rope", "softmax"})
    residual_suffixes = tuple(f".{m}.{s}" for m in ("attention.dense", "mlp.dense_4h_to_h") for s in ("weight", "bias"))
    space = ConfigSpace(
        positions=("rope",), norms=("LayerNorm",), mlps=("GptNeoxMLP",),
        bias=(True,),  # the MLP and the LayerNorms always carry biases
        attn_bias=(False,),  # redundant with bias=True
        shared_attention_norm=(False,),  # two LayerNorms per layer
        gqa=False, free_head_size=False,  # head_size = hidden_size // num_attention_heads, no GQA
        odd_rotary=False,  # HF's RoPE over an odd rotary_ndims rotates one feature more than ours (and any
        # rotate-half RoPE with a pass-through last feature): odd counts are a different model
        dropout_groups=(("embd_dropout", "resid_dropout"), ("attn_dropout",)),  # one hidden_dropout
        backends=("math", "sdpa"),
    )

    def param_count(self, config: Config) -> int:
        """embed_in + per layer (2 LayerNorms, query_key_value, dense, dense_h_to_4h, dense_4h_to_h) + final
        LayerNorm + lm_head; attention_bias is True in this space."""
        C, I, V, L = config.n_embd, config.intermediate_size, config.vocab_size, config.n_layer
        layer = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C)
        return V * C + L * layer + 2 * C + (0 if config.tie_embeddings else V * C)


class HFLlamaSubject(HFSubject):
    """``LlamaForCausalLM``: RMSNorm, SwiGLU (or GeGLU via hidden_act), GQA, full rotary, free head_dim."""

    name = "hf-llama"
    family, hf_class = "llama", "LlamaForCausalLM"
    hf_float32_islands = frozenset({"rmsnorm", "rope", "softmax"})
    residual_suffixes = tuple(f".{m}.{s}" for m in ("self_attn.o_proj", "mlp.down_proj") for s in ("weight", "bias"))
    space = ConfigSpace(
        positions=("rope",), norms=("RMSNorm",),
        mlps=("LLaMAMLP", "GemmaMLP"),  # hidden_act silu, or a GELU (exact / tanh) for the GeGLU variant
        attn_bias=(False,),  # attention_bias also biases o_proj, so qkv-only bias (Qwen-style) is not Llama;
        # bias=True maps to attention_bias=mlp_bias=True
        parallel_residual=(False,), shared_attention_norm=(False,),
        partial_rotary=False, odd_rotary=False,  # Llama rotates all of head_dim, which must be even
        divisible_n_embd=True,  # LlamaConfig validates hidden_size % num_attention_heads == 0
        dropout_groups=(("attn_dropout",),),  # attention_dropout is Llama's only dropout
        backends=("math", "sdpa"),
        rope_scalings=("none", "linear", "llama3", "yarn"),  # rope_parameters of the same rope_type
    )

    def param_count(self, config: Config) -> int:
        """embed_tokens + per layer (block RMSNorms, q/k/v/o, gate/up/down, biases as the family has them,
        q_norm / k_norm) + final RMSNorm + lm_head, from the family's module shapes (gpt.hf_llama_families)."""
        spec = SPECS[self.family]
        C, I, V, L = config.n_embd, config.intermediate_size, config.vocab_size, config.n_layer
        q, kv = config.n_head * config.head_size, config.n_query_groups * config.head_size
        b = int(config.bias) if spec.bias == "llama" else 0
        attn = C * q + 2 * C * kv + q * C + b * (q + 2 * kv + C) + (q + 2 * kv if spec.bias == "qkv" else 0)
        attn += {"none": 0, "per_head": 2 * config.head_size, "all_heads": q + kv}[spec.qk_norm]
        mlp = 3 * C * I + b * (2 * I + C)
        norms = (4 if spec.norm_placement == "sandwich" else 2) * C
        return V * C + L * (norms + attn + mlp) + C + (0 if config.tie_embeddings else V * C)


_MODERN = dict(positions=("rope",), norms=("RMSNorm",), mlps=("LLaMAMLP",),
               bias=(False,), attn_bias=(False,),  # no MLP biases; attention_bias would also bias o_proj
               parallel_residual=(False,), shared_attention_norm=(False,),
               partial_rotary=False, odd_rotary=False,  # rotary over all of an even head_dim
               dropout_groups=(("attn_dropout",),),  # attention_dropout is the only dropout
               backends=("math", "sdpa"), rope_scalings=("none", "linear", "llama3", "yarn"))
# Sliding windows (gpt.hf_llama_families: transformers' W is ours, keys i - W < j <= i): W >= 2 only, since
# transformers 5.24's DynamicSlidingWindowLayer keeps the last W - 1 keys as keys[..., -W + 1:, :], which for
# W = 1 is [..., 0:, :] (all of them): its keys then outgrow the mask it builds and cached decoding raises a
# shape error. (The full forward is right at W = 1; the cache is not usable there.)
_WINDOWS = dict(sliding_window=True, min_sliding_window=2)
WINDOW_CAPABILITIES = HF_CAPABILITIES | {"sliding_window"}


class HFMistralSubject(HFLlamaSubject):
    """``MistralForCausalLM``: Llama without biases, free head_dim, one sliding window on every layer."""

    name = "hf-mistral"
    family, hf_class = "mistral", "MistralForCausalLM"
    capabilities = WINDOW_CAPABILITIES
    space = ConfigSpace(**_MODERN, **_WINDOWS)  # sliding_window, no per-layer pattern


class HFQwen2Subject(HFLlamaSubject):
    """``Qwen2ForCausalLM``: q, k and v biased (our attn_bias), o_proj and the MLP not; sliding windows on
    the layers layer_types names (use_sliding_window)."""

    name = "hf-qwen2"
    family, hf_class = "qwen2", "Qwen2ForCausalLM"
    capabilities = WINDOW_CAPABILITIES
    space = ConfigSpace(**{**_MODERN, "attn_bias": (True,)},  # Qwen2's q/k/v always carry biases
                        **_WINDOWS, layer_types=True,
                        free_head_size=False)  # head_dim = hidden_size // num_attention_heads


class HFQwen3Subject(HFLlamaSubject):
    """``Qwen3ForCausalLM``: RMSNorm over each head's queries and keys before RoPE, free head_dim; windows
    as Qwen2."""

    name = "hf-qwen3"
    family, hf_class = "qwen3", "Qwen3ForCausalLM"
    capabilities = WINDOW_CAPABILITIES
    space = ConfigSpace(**_MODERN, qk_norms=("per_head",),  # Qwen3 always has q_norm and k_norm
                        **_WINDOWS, layer_types=True)


class HFGemma2Subject(HFLlamaSubject):
    """``Gemma2ForCausalLM``: sandwich norms with (1 + weight) RMSNorms, GeGLU, embeddings times
    sqrt(hidden_size), query_pre_attn_scalar = head_dim (scale 1 / sqrt(head_size)), sliding windows on the
    layers layer_types names, attention and final logit soft-capping."""

    name = "hf-gemma2"
    family, hf_class = "gemma2", "Gemma2ForCausalLM"
    capabilities = WINDOW_CAPABILITIES | {"softcap"}
    space = ConfigSpace(**{**_MODERN, "mlps": ("GemmaMLP",),  # hidden_activation is a GELU (exact or tanh)
                           "backends": ("math",)},  # transformers' Gemma 2 refuses sdpa (eager only: the
                        # soft-cap needs the scores, which sdpa does not expose)
                        **_WINDOWS, layer_types=True, attn_logit_softcap=True, final_logit_softcap=True,
                        norm_placements=("sandwich",), scale_embeddings=(True,),  # Gemma 2 always has them
                        divisible_n_embd=True)  # Gemma2Config validates hidden_size % num_attention_heads


class HFOlmo2Subject(HFLlamaSubject):
    """``Olmo2ForCausalLM``: norms after attention and MLP inside the residual, QK-norm over all heads."""

    name = "hf-olmo2"
    family, hf_class = "olmo2", "Olmo2ForCausalLM"
    space = ConfigSpace(**_MODERN, qk_norms=("all_heads",), norm_placements=("post",),  # always, in OLMo 2
                        free_head_size=False)  # head_dim = hidden_size // num_attention_heads


class HFPhi3Subject(HFLlamaSubject):
    """``Phi3ForCausalLM``: fused qkv_proj and gate_up_proj, partial rotary, residual dropout, one sliding
    window on every layer."""

    name = "hf-phi3"
    family, hf_class = "phi3", "Phi3ForCausalLM"
    capabilities = WINDOW_CAPABILITIES
    space = ConfigSpace(**_WINDOWS, **{**_MODERN, "partial_rotary": True,  # partial_rotary_factor (even counts only:
                           # an odd rotary_dim makes HF rotate one feature more than ours, as in GPT-NeoX)
                           "rope_scalings": ("none",),  # Phi3Config accepts only longrope scaling (not ours)
                           "dropout_groups": (("resid_dropout",), ("attn_dropout",))},  # resid_pdrop,
                        # attention_dropout; embd_pdrop exists but transformers' model never applies it
                        free_head_size=False)  # head_dim = hidden_size // num_attention_heads


BY_FAMILY = {s.family: s for s in (HFGPT2Subject, HFNeoXSubject, HFLlamaSubject, HFMistralSubject, HFQwen2Subject,
                                   HFQwen3Subject, HFGemma2Subject, HFOlmo2Subject, HFPhi3Subject)}


def raw_gpt2() -> Subject:
    """hf-gpt2 without the float64 numerics (GPT-2 has no float32 casts: identical results)."""
    return HFGPT2Subject(exact_float64=False)


def raw_neox() -> Subject:
    """hf-neox running HF's float32 RoPE table and eager softmax in float64 models as they are."""
    return HFNeoXSubject(exact_float64=False)


def raw_llama() -> Subject:
    """hf-llama running HF's float32 RMSNorm, RoPE table and eager softmax in float64 models as they are."""
    return HFLlamaSubject(exact_float64=False)
