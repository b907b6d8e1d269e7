"""QK-norm scale invariance (Config.qk_norm): RMSNorm over each head's queries and keys makes attention
blind to the scale of the query and key projections.

RMSNorm_eps(c x) = c x / sqrt(c^2 ms(x) + eps) = RMSNorm_{eps / c^2}(x): the invariance is exact in the
limit eps -> 0, so the models here use norm_eps = 1e-300, far below float64's resolution of any mean square
of a projection (eps / ms < 1e-250), and the two forwards then differ only by rounding (the float64
summation-order bound of harness.assert_close64). With "per_head" each head (query head, kv group) is
normalised on its own, so scaling each head by its own c_h > 0 is invisible; with "all_heads" (OLMo 2) one
norm spans all heads, so only one common c is. The norm weights are drawn at random (1 + N(0, 0.3^2)),
so the property holds for trained norms, not only for the ones at init.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import assert_close64, build, draw_config
from strategies import seeds, token_batches

pytestmark = pytest.mark.gpt_internal
SCALES = st.floats(1e-3, 1e3)


def _randomise_norms(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@given(data=st.data())
def test_qk_norm_is_invariant_to_query_and_key_scales(subject, data):
    """logits(W_q rows of head h times c_h, W_k rows of group g times c'_g) == logits(W_q, W_k) for all c > 0
    ("per_head"; one common c_q and c_k for "all_heads"); biases of those rows scaled alike."""
    from properties.harness import gpt_only

    gpt_only(subject)
    kind = data.draw(st.sampled_from(["per_head", "all_heads"]), label="qk_norm")
    config = draw_config(data, subject, qk_norm=kind, norm_eps=1e-300)
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config), label="idx")
    model = build(subject, config, seed)
    _randomise_norms(model, seed)
    c, hs = config, config.head_size
    n_scales = (c.n_head, c.n_query_groups) if kind == "per_head" else (1, 1)
    cq = data.draw(st.lists(SCALES, min_size=n_scales[0], max_size=n_scales[0]), label="query scales")
    ck = data.draw(st.lists(SCALES, min_size=n_scales[1], max_size=n_scales[1]), label="key scales")
    per_row = torch.cat([torch.tensor(cq, dtype=torch.float64).repeat_interleave(c.n_head * hs // len(cq)),
                         torch.tensor(ck, dtype=torch.float64).repeat_interleave(c.n_query_groups * hs // len(ck)),
                         torch.ones(c.n_query_groups * hs, dtype=torch.float64)])  # values unscaled
    with torch.no_grad():
        expected = subject.logits(model, idx)
        layer = data.draw(st.integers(0, c.n_layer - 1), label="scaled layer")
        qkv = model.blocks[layer].attn.qkv
        qkv.weight.mul_(per_row[:, None])
        if qkv.bias is not None:
            qkv.bias.mul_(per_row)
        assert_close64(subject.logits(model, idx), expected, config,
                       f"logits after scaling layer {layer}'s query heads by {cq} and key heads by {ck}")
