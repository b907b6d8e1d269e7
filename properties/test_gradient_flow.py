"""Property 8: gradient flow. After one backward pass of the language-model loss, every trainable
parameter has a gradient that is finite everywhere and non-zero somewhere."""
import torch
from hypothesis import given, strategies as st
from torch.nn import functional as F

from properties.harness import draw_case


@given(data=st.data())
def test_every_parameter_gets_a_finite_nonzero_gradient(subject, data):
    """loss.backward() reaches every parameter: grad is not None, finite, and not identically zero."""
    config, model, idx = draw_case(data, subject)
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
