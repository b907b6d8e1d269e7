"""Property 8: gradient flow. After one backward pass of the language-model loss, every trainable
parameter has a gradient that is finite everywhere and non-zero somewhere."""
import torch
from hypothesis import given, strategies as st
from torch.nn import functional as F

from properties.harness import draw_case


@given(data=st.data())
def test_every_parameter_gets_a_finite_nonzero_gradient(subject, data):
    """loss.backward() reaches every parameter: grad is not None, finite, and not identically zero.

    The first row holds two different tokens. With one token per row every attention weight is 1, and with
    one repeated token and no learned positions every value vector is the same, so in both cases the
    attention weights do not change the output and separate query and key projections (Llama's q_proj and
    k_proj) get exactly zero gradient; a fused qkv projection only hides that through its value rows.

    For the same reason a sliding window is at least 2 keys wide.

    A mixture of experts is drawn with top-k = n_experts: an expert no token selects gets exactly zero
    gradient by design (test_moe_gradients checks that), so only dense routing reaches every parameter;
    and at least 2 experts, since a single expert always gets weight 1 and its router no gradient.
    """
    n_experts = data.draw(st.integers(2, 3), label="n_experts = top-k")
    # a window of 1 key leaves every attention weight at 1, like a single token (q and its QK-norm get 0)
    window = data.draw(st.one_of(st.none(), st.integers(2, 4)), label="sliding_window") \
        if subject.space.sliding_window else None
    config, model, idx = draw_case(data, subject, min_len=2, n_experts=n_experts, n_experts_per_token=n_experts,
                                   sliding_window=window)
    if (idx[0] == idx[0, 0]).all():
        idx = idx.clone()
        idx[0, -1] = (idx[0, 0] + 1) % config.vocab_size
    model.train()
    targets = torch.randint(0, config.vocab_size, idx.shape, generator=torch.Generator().manual_seed(0))
    logits = subject.logits(model, idx)
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name} received no gradient (unused, or cut off by a detach)"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().max() > 0, f"{name} has an all-zero gradient"
