"""Property 7: finite-difference gradients. torch.autograd.gradcheck (float64, fast mode) agrees with
autograd with respect to the input embeddings and with respect to every parameter."""
import torch
from hypothesis import given, strategies as st
from torch.func import functional_call

from properties.harness import draw_case, requires


@given(data=st.data())
def test_gradcheck_input_embeddings(subject, data):
    """d logits / d inputs_embeds from autograd matches central finite differences."""
    requires(subject, "inputs_embeds")
    config, model, idx = draw_case(data, subject, max_batch=2)
    embeds = subject.embed(model, idx).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: subject.logits_from_embeds(model, e), (embeds,), fast_mode=True)


@given(data=st.data())
def test_gradcheck_parameters(subject, data):
    """d logits / d theta from autograd matches central finite differences, for all parameters at once."""
    config, model, idx = draw_case(data, subject, max_batch=2)
    names, params = zip(*[(n, p.detach().requires_grad_(True)) for n, p in model.named_parameters()])

    def logits(*values):
        return functional_call(model, dict(zip(names, values)), (idx,))

    assert torch.autograd.gradcheck(logits, params, fast_mode=True)
