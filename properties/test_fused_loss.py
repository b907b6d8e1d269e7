"""The training losses of gpt.fused_loss equal the cross-entropy of the model's logits.

For hidden states h (N, C), a head W (V_pad, C) whose rows >= V are vocabulary padding, targets t (some equal
to ignore_index), and the set K of non-ignored positions:

    head_cross_entropy(h, W, V, t) == (1/|K|) sum_{i in K} -log softmax(h_i W[:V]^T)[t_i]
    linear_cross_entropy(h, W[:V], t) == the same

with the same gradients w.r.t. h and W (padding rows of W get exactly zero gradient): in float64 on the
CPU to the summation-order bound (a length-V log-sum-exp and a length-C dot product), and on CUDA in
bf16 within 2x the error of the unfused same-dtype loss against float64, plus the floor (the flash-attention
rule), for the eager and compiled padded head and for the fused linear cross-entropies of Liger-Kernel
and Apple's cut-cross-entropy (each where installed).
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn import functional as F

from gpt.fused_loss import FUSED, fused_available, head_cross_entropy, linear_cross_entropy
from properties.harness import assert_low_precision

pytestmark = pytest.mark.gpt_internal
IGNORE = -100


@st.composite
def loss_cases(draw, max_n=24, max_c=16, max_v=40):
    n, c = draw(st.integers(1, max_n), label="N"), draw(st.integers(1, max_c), label="C")
    v = draw(st.integers(2, max_v), label="vocab_size")
    v_pad = v + draw(st.sampled_from([0, 1, 7, 64 - v % 64]), label="padding rows")
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=gen, dtype=torch.float64)
    w = torch.randn(v_pad, c, generator=gen, dtype=torch.float64)
    t = torch.randint(0, v, (n,), generator=gen)
    ignored = torch.rand(n, generator=gen) < draw(st.sampled_from([0.0, 0.3]), label="ignored fraction")
    ignored[0] = False  # at least one counted target: the mean over an empty set is NaN by definition
    return h, w, v, t.masked_fill(ignored, IGNORE)


def _reference(h, w, v, t):
    return F.cross_entropy(h @ w[:v].T, t, ignore_index=IGNORE)


def _loss_and_grads(fn, h, w, *args):
    h, w = h.detach().requires_grad_(True), w.detach().requires_grad_(True)
    loss = fn(h, w, *args)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def _bound(h, w, v) -> float:
    """4 n eps64 (1 + scale): n = V + C (one dot product, one log-sum-exp), scale = the logits' magnitude."""
    n = v + h.size(-1)
    return 4 * n * torch.finfo(torch.float64).eps * (1 + (h @ w[:v].T).abs().max().item())


@given(case=loss_cases())
def test_head_cross_entropy_equals_cross_entropy_of_logits_float64(case):
    """head_cross_entropy and linear_cross_entropy (unfused) == CE(h W[:V]^T, t), values and gradients;
    padding rows of W get zero gradient."""
    h, w, v, t = case
    ref = _loss_and_grads(_reference, h, w, v, t)
    tol = _bound(h, w, v)
    for name, fn, args in (("head_cross_entropy", head_cross_entropy, (v, t, IGNORE)),
                           ("linear_cross_entropy", lambda h, w, t: linear_cross_entropy(h, w[:v], t, impl="torch"),
                            (t,))):
        got = _loss_and_grads(fn, h, w, *args)
        for what, a, b in zip(("loss", "dh", "dW"), got, ref):
            err = (a - b).abs().max().item()
            assert err <= tol, f"{name} {what}: max |difference| {err:.3e} > float64 bound {tol:.3e}"
        assert not got[2][v:].any(), f"{name}: padding rows of the head received a gradient"


@pytest.mark.gpu
@settings(max_examples=10, deadline=None)
@given(case=loss_cases(max_n=300, max_c=96, max_v=600), compiled=st.booleans())
def test_fused_losses_on_cuda_within_twice_unfused_error(case, compiled):
    """bf16 on CUDA: loss, dh, dW of the padded head (eager or compiled) and of Liger's and CCE's fused losses within 2x
    the unfused bf16 loss's error vs float64, + the floor."""
    from properties.gpu import device

    dev = device()
    h, w, v, t = case[0].to(dev), case[1].to(dev), case[2], case[3].to(dev)
    exact = _loss_and_grads(_reference, h, w, v, t)
    low = (h.bfloat16(), w.bfloat16())
    same_dtype = _loss_and_grads(lambda h, w, v, t: F.cross_entropy((h @ w[:v].T).float(), t, ignore_index=IGNORE),
                                 *low, v, t)
    head = torch.compile(head_cross_entropy) if compiled else head_cross_entropy
    candidates = {f"head_cross_entropy{' compiled' if compiled else ''}": (head, (v, t, IGNORE))}
    for impl in FUSED:
        if fused_available(impl):
            candidates[f"{impl} fused"] = (lambda h, w, t, impl=impl: linear_cross_entropy(h, w[:v], t, impl=impl), (t,))
    scale = max(x.abs().max().item() for x in exact)
    for name, (fn, args) in candidates.items():
        got = _loss_and_grads(fn, *low, *args)
        for what, a, ref, ex in zip(("loss", "dh", "dW"), got, same_dtype, exact):
            if what == "dW":
                a, ref, ex = a[:v], ref[:v], ex[:v]
            assert_low_precision(a, ref, ex, 2, f"{name} {what}", scale)
