"""Property 7: finite-difference gradients. torch.autograd.gradcheck (float64, fast mode) agrees with
autograd with respect to the input embeddings and with respect to every parameter."""
import pytest
import torch
from hypothesis import given, strategies as st
from torch.func import functional_call

from properties.harness import draw_case, requires_float64_arithmetic


@pytest.mark.needs("inputs_embeds")
@given(data=st.data())
def test_gradcheck_input_embeddings(subject, data):
    """d logits / d inputs_embeds from autograd matches central finite differences."""
    requires_float64_arithmetic(subject)
    config, model, idx = draw_case(data, subject, max_batch=2)
    embeds = subject.embed(model, idx).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: subject.logits_from_embeds(model, e), (embeds,), fast_mode=True)


class _SubjectLogits(torch.nn.Module):
    """The subject's forward as a module, so functional_call swaps parameters under subject.logits (a
    subject's model need not return a logits tensor from its own __call__, e.g. transformers models)."""

    def __init__(self, subject, model):
        super().__init__()
        self.subject, self.model = subject, model

    def forward(self, idx):
        return self.subject.logits(self.model, idx)


@given(data=st.data())
def test_gradcheck_parameters(subject, data):
    """d logits / d theta from autograd matches central finite differences, for all parameters at once."""
    requires_float64_arithmetic(subject)
    config, model, idx = draw_case(data, subject, max_batch=2)
    wrapped = _SubjectLogits(subject, model)
    names, params = zip(*[(n, p.detach().requires_grad_(True)) for n, p in wrapped.named_parameters()])

    def logits(*values):
        return functional_call(wrapped, dict(zip(names, values)), (idx,))

    assert torch.autograd.gradcheck(logits, params, fast_mode=True)
