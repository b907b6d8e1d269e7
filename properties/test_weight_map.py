"""The weight-map helpers (properties/weight_map.py, gpt/weight_layout.py) are exact and complain clearly.

- Every ready map and transform is invertible: to_reference(to_subject(W)) == W bitwise (vocabulary
  padding rows, which never reach logits, come back as zeros).
- rope_interleaved: adjacent-pair RoPE on the permuted rows computes the same scores q.k as rotate-half
  RoPE on the reference rows (the permutation Llama conversions apply).
- A reference tensor no rule maps, or a model tensor missing, raises ValueError naming it.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt import GPT
from gpt.config import Config
from gpt.embedding import apply_rope, rope_cache
from gpt.weight_layout import half_to_interleaved
from properties.weight_map import WeightMap, litgpt, nanogpt, rename, transformers, vocab
from strategies import configs
from strategies.space import ConfigSpace

pytestmark = pytest.mark.repo

SPACES = {
    "nanogpt": (nanogpt(), ConfigSpace(positions=("learned",), norms=("LayerNorm",), mlps=("GptNeoxMLP",))),
    "litgpt": (litgpt(), ConfigSpace()),
    "litgpt-interleaved": (litgpt(interleaved_qkv=True), ConfigSpace()),
    "llama": (transformers("llama"), ConfigSpace(positions=("rope",), norms=("RMSNorm",), mlps=("LLaMAMLP",),
                                                 attn_bias=(False,), parallel_residual=(False,),
                                                 shared_attention_norm=(False,), partial_rotary=False,
                                                 odd_rotary=False, divisible_n_embd=True)),
}


@settings(max_examples=10)
@given(data=st.data())
def test_ready_maps_round_trip_exactly(data):
    """to_reference(to_subject(W)) == W for nanoGPT, litgpt (both qkv layouts) and transformers names."""
    name = data.draw(st.sampled_from(sorted(SPACES)), label="map")
    wmap, space = SPACES[name]
    config = data.draw(configs(space), label="config")
    torch.manual_seed(0)
    ref = GPT(config).state_dict()
    back = wmap.to_reference(wmap.to_subject(ref, config), config)
    V = config.vocab_size
    assert set(back) == set(ref)
    for n, t in ref.items():
        b = back[n]
        if n in ("wte.weight", "lm_head.weight"):
            # litgpt keeps the padded rows; the others drop them and refill zeros
            assert torch.equal(b, t) or (torch.equal(b[:V], t[:V]) and not b[V:].any()), n
        else:
            assert torch.equal(b, t), n


@given(hs=st.sampled_from([2, 4, 6, 8]), pos=st.integers(0, 50), seed=st.integers(0, 100))
@settings(max_examples=20)
def test_rope_interleaved_permutation_gives_the_same_scores(hs, pos, seed):
    """<R_half(p) q, R_half(0) k> == <R_pair(p) P q, R_pair(0) P k> with P = half_to_interleaved."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(hs, generator=gen, dtype=torch.float64), torch.randn(hs, generator=gen, dtype=torch.float64)
    cos, sin = rope_cache(torch.tensor([pos, 0]), hs, 10000.0, torch.float64)
    ref = (apply_rope(q.view(1, 1, 1, hs), cos[:1], sin[:1]) * apply_rope(k.view(1, 1, 1, hs), cos[1:], sin[1:])).sum()
    qp, kp = (half_to_interleaved(t.view(hs, 1), 1, hs, hs).view(hs) for t in (q, k))

    def pair_rope(x, c, s):  # adjacent pairs (2i, 2i+1), as Meta's Llama and torchtune rotate
        x1, x2 = x[0::2], x[1::2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).reshape(-1)

    got = (pair_rope(qp, cos[0], sin[0]) * pair_rope(kp, cos[1], sin[1])).sum()
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_unmapped_and_missing_tensors_are_named():
    config = Config(vocab_size=8, padding_multiple=1, block_size=4, n_layer=1, n_embd=4, n_head=1)
    sd = GPT(config).state_dict()
    partial = WeightMap([vocab("wte.weight", "tok.weight"), rename("wpe.weight", "pos.weight")])
    with pytest.raises(ValueError, match="blocks.0.attn.qkv.weight"):
        partial.to_subject(sd, config)
    from properties.weight_map import load_into

    model = torch.nn.Module()
    model.tok = torch.nn.Embedding(8, 4)
    model.head = torch.nn.Linear(4, 8)
    with pytest.raises(ValueError, match=r"missing \['head.weight', 'head.bias'\].*unexpected \['pos.weight'\]"):
        load_into(model, {"tok.weight": torch.zeros(8, 4), "pos.weight": torch.zeros(4, 4)})
