"""What the property modules share: drawing a case, building the model, tolerances, capability skips."""
from __future__ import annotations

import pytest
import torch
from hypothesis import note

from strategies import configs, seeds, token_batches


def requires(subject, *capabilities: str) -> None:
    missing = [c for c in capabilities if c not in subject.capabilities]
    if missing:
        pytest.skip(f"subject {subject.name} lacks capability {', '.join(missing)}")


def draw_config(data, subject, size: str = "tiny", **kw):
    return data.draw(configs(subject.space, size=size, **kw), label="config")


def build(subject, config, seed: int, dtype=torch.float64, device="cpu", train: bool = False):
    """The subject's model for (config, seed), in eval mode unless ``train``; printed for reproduction."""
    note(f"rebuild: subject.build({config!r}, seed={seed}, dtype={dtype})")
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


def float64_tol(config, ref: torch.Tensor) -> float:
    """Bound for float64 results that differ only by summation order.

    A length-n dot product in a different order differs by at most n * u * sum|a_i b_i| (Higham, ch. 3);
    each of the n_layer blocks chains a few of them, the longest of length max(n_embd, intermediate_size,
    block_size), and the outputs are O(max|logit|). 4 * L * n * u * (1 + max|ref|) covers the chain; any
    real bug in these tiny models moves logits by orders of magnitude more (1e-6 and up).
    """
    n = max(config.n_embd, config.intermediate_size, config.block_size, config.n_head * config.head_size,
            config.moe_intermediate_size, config.shared_expert_intermediate_size)
    u = torch.finfo(torch.float64).eps
    return 4 * config.n_layer * n * u * (1.0 + ref.abs().max().item())


def assert_close64(actual: torch.Tensor, expected: torch.Tensor, config, what: str) -> None:
    tol = float64_tol(config, expected)
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert err <= tol, f"{what}: max |difference| {err:.3e} exceeds the float64 reordering bound {tol:.3e}"


def assert_close_subject(subject, actual: torch.Tensor, expected: torch.Tensor, config, what: str) -> None:
    """Generic properties compare a subject's outputs through this: the bound follows from the subject's
    declared working precision (float64 here, the summation-order bound of ``assert_close64``)."""
    assert_close64(actual, expected, config, what)


def dropout_free(config) -> bool:
    return config.embd_dropout == config.attn_dropout == config.resid_dropout == 0


def gpt_only(subject) -> None:
    """Properties of this project's internals (module formulas, padding) run on gpt subjects only."""
    from properties.subject import GPTSubject

    if not isinstance(subject, GPTSubject):
        pytest.skip(f"checks gpt internals; subject {subject.name} is another implementation")


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
