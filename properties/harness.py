"""What the property modules share: drawing a case, building the model, tolerances, capability skips."""
from __future__ import annotations

import pytest
import torch
from hypothesis import note

from strategies import configs, seeds, token_batches


def current_test() -> str:
    """The running test's name (skip reasons name the property, not this file)."""
    import os

    return os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0] or "this property"


def requires(subject, *capabilities: str) -> None:
    """Dynamic capability check; a static one is ``@pytest.mark.needs(...)`` (listed by gpt-properties list)."""
    missing = [c for c in capabilities if c not in subject.capabilities]
    if missing:
        pytest.skip(f"{current_test()}: subject {subject.name} lacks capability {', '.join(missing)}")


def draw_config(data, subject, size: str = "tiny", **kw):
    return data.draw(configs(subject.space, size=size, **kw), label="config")


_LAST_BUILD: list = []


def last_build() -> str:
    """The rebuild expression of the last model built in this process (the shrunk example's, after a
    Hypothesis failure: its final replay builds last); the conformance report prints it."""
    return _LAST_BUILD[-1] if _LAST_BUILD else ""


def build(subject, config, seed: int, dtype=torch.float64, device="cpu", train: bool = False):
    """The subject's model for (config, seed), in eval mode unless ``train``; printed for reproduction."""
    line = f"subject.build({config!r}, seed={seed}, dtype={dtype})"
    note(f"rebuild: {line}")
    _LAST_BUILD[:] = [line]
    model = subject.build(config, seed, dtype=dtype, device=device)
    return model.train(train)


def draw_case(data, subject, dtype=torch.float64, min_len: int = 1, max_batch: int = 3, min_batch: int = 1,
              max_len=None, **config_kw):
    """(config, model, idx): a drawn config, its model built from a drawn seed, and a token batch."""
    config = draw_config(data, subject, **config_kw)
    seed = data.draw(seeds(), label="seed")
    model = build(subject, config, seed, dtype)
    idx = data.draw(token_batches(config, max_batch=max_batch, min_len=min_len, max_len=max_len,
                                          min_batch=min_batch), label="idx")
    return config, model, idx


def _chain_length(config) -> int:
    """n of the bounds below: the longest reduction of the forward (a dot product over n_embd, the MLP's
    intermediate_size or the attention width, a softmax over up to block_size keys; a RoPE angle p * theta
    has p < block_size; an MoE layer's experts and shared expert have their own widths)."""
    return max(config.n_embd, config.intermediate_size, config.block_size, config.n_head * config.head_size,
               config.moe_intermediate_size, config.shared_expert_intermediate_size)


def reordering_tol(config, ref: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """Bound for results that differ only by rounding in ``dtype``: 4 * L * n * eps * (1 + max|ref|), with
    eps = 2u the machine epsilon of ``dtype`` (u its unit roundoff).

    float64 (summation order): a length-n dot product in a different order differs by at most
    n * u * sum|a_i b_i| <= n * eps * sum|a_i b_i| (Higham, ch. 3); each of the n_layer blocks chains a
    few of them, the longest of length n (``_chain_length``), and the outputs are O(max|logit|). 4 * L * n * eps * (1 + max|ref|)
    covers the chain; any real bug in these tiny models moves logits by orders of magnitude more (1e-6 and
    up).

    float32 islands (a float64 model computing its norm statistics, RoPE table or softmax in float32):
    each island is one of the same operations, a reduction of length <= n or an angle p * theta with
    p < block_size <= n, evaluated with unit roundoff u32 = 2^-24 instead of u64, so it is off by at most
    n * u32 relative to its operands (Higham's bound with u32); the float64 arithmetic around it adds
    n * u64 << n * u32. Two results of one subject that should be equal each carry such errors from at
    most the same islands of the same L blocks, and downstream layers of these tiny models (weights
    N(0, 0.02^2), normalised activations) do not amplify them beyond the factor the float64 bound
    already allows. Hence the same chain with u = u32. On the drawn tiny configs it is 1e-5 to 1e-4 at
    most, while a causal-mask or RoPE bug moves logits by 1e-3 and more: a planted bug in a
    float32-island model is still caught (examples/float32_islands.py, properties/test_precision.py).
    """
    u = torch.finfo(dtype).eps / 2  # unit roundoff; eps = 2u
    return 8 * config.n_layer * _chain_length(config) * u * (1.0 + ref.abs().max().item())


def float64_tol(config, ref: torch.Tensor) -> float:
    """The float64 summation-order bound, 4 * L * n * eps64 * (1 + max|ref|) (see ``reordering_tol``)."""
    return reordering_tol(config, ref, torch.float64)


def _check_finite(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Non-finite values are reported as that, with the first position, never as a tolerance miss."""
    from properties.conformance import first_non_finite

    for name, t in (("result", actual), ("reference", expected)):
        if t.is_floating_point() or t.is_complex():
            bad = first_non_finite(t)
            assert not bad, f"{what}: non-finite {name}: {bad} (the model's output is not finite)"


def assert_close64(actual: torch.Tensor, expected: torch.Tensor, config, what: str,
                   dtype: torch.dtype = torch.float64, condition: float = 1.0) -> None:
    """``condition`` >= 1 multiplies the bound where an input amplifies rounding (see its caller)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    _check_finite(actual, expected, what)
    tol = reordering_tol(config, expected.double(), dtype) * condition
    err = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    kind = "float64 reordering" if dtype == torch.float64 else f"{str(dtype).replace('torch.', '')} working-precision"
    assert err <= tol, f"{what}: max |difference| {err:.3e} exceeds the {kind} bound {tol:.3e}"


def assert_close_subject(subject, actual: torch.Tensor, expected: torch.Tensor, config, what: str,
                         condition: float = 1.0) -> None:
    """Generic properties compare a subject's float64 outputs through this: the bound follows from the
    subject's declared working precision (``Subject.working_dtype``: float64, or float32 for a model with
    float32 islands or float32 logits), through the chain of ``reordering_tol``, times ``condition`` (>= 1)
    where the property derives an amplification of rounding errors."""
    assert_close64(actual, expected, config, what, dtype=getattr(subject, "working_dtype", torch.float64),
                   condition=condition)


def requires_float64_arithmetic(subject) -> None:
    """Finite differences need float64 throughout: gradcheck's step is 1e-6, and a float32 island's
    rounding u32 * |f| ~ 6e-8 * |f| divided by that step is a slope error of ~0.06 * |f|, far over
    gradcheck's 1e-5 tolerance. Subjects declaring a lower working precision skip, saying so."""
    if subject.working_dtype != torch.float64:
        pytest.skip(f"{current_test()}: subject {subject.name} computes in {subject.working_dtype} "
                    "(declared working precision); float64 finite differences would measure its rounding")


def dropout_free(config) -> bool:
    return config.embd_dropout == config.attn_dropout == config.resid_dropout == 0


def gpt_only(subject) -> None:
    """Properties of this project's internals (module formulas, padding) run on gpt subjects only."""
    from properties.subject import GPTSubject

    if not isinstance(subject, GPTSubject):
        pytest.skip(f"{current_test()}: checks gpt internals; subject {subject.name} is another implementation")


def noise_floor(ref: torch.Tensor, dtype: torch.dtype) -> float:
    """Twice the error of merely representing ``ref`` in ``dtype`` near its magnitude:
    2 * max|fl(ref + 0.3) - 0.3 - ref|, the floor flash-attention's tests add to their bounds."""
    low = ref.to(dtype)
    return 2 * ((low + 0.3 - 0.3).double() - low.double()).abs().max().item()


def assert_low_precision(actual: torch.Tensor, same_dtype_ref: torch.Tensor, ref64: torch.Tensor,
                         factor: float, what: str, accumulation_scale: float = 0.0) -> None:
    """The flash-attention rule: |actual - ref64| <= factor * |same-dtype reference - ref64| + floor.

    ``accumulation_scale`` adds eps_float32 * scale to the floor: fused kernels accumulate in float32, so
    a result that is exactly 0 in float64 (a gradient through a one-key softmax, say) may come out as
    float32 rounding noise at the magnitude of the operands; pass the largest reference magnitude there.
    """
    ref64 = ref64.double()
    err = (actual.double() - ref64).abs().max().item()
    ref_err = (same_dtype_ref.double() - ref64).abs().max().item()
    floor = noise_floor(ref64, actual.dtype) + torch.finfo(torch.float32).eps * accumulation_scale
    bound = factor * ref_err + floor
    assert err <= bound, (f"{what}: error {err:.3e} vs float64 > {factor} x same-dtype reference error "
                          f"{ref_err:.3e} + noise floor = {bound:.3e}")


def decode_in_chunks(subject, model, idx: torch.Tensor, plan) -> torch.Tensor:
    """Logits of ``idx`` decoded through a fresh KV cache in chunks of the lengths in ``plan``."""
    subject.reset_cache(model, idx.size(0), idx.size(1))
    out, pos = [], 0
    for n in plan:
        out.append(subject.decode(model, idx[:, pos : pos + n], pos))
        pos += n
    return torch.cat(out, dim=1)
