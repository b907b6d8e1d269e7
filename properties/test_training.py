"""Properties of the training step (``gpt.loss``, ``gpt.train``): accumulation, checkpointing, mode cycling,
and the optimizer trajectory. The loss convention tested: the mean over all non-ignored tokens of the
global batch (``gpt.loss``).

1. accumulation: k micro-batches with uneven numbers of non-ignored tokens give the full-batch gradient;
3. activation checkpointing (non-reentrant, RNG preserved) with dropout changes no loss and no gradient;
5. train -> eval -> train leaves seeded train-mode outputs bitwise unchanged;
8. 16 overfit steps with fused vs foreach AdamW give per-step losses within a derived bound.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings, strategies as st

from gpt.loss import count_tokens, cross_entropy
from gpt.train import TrainStep, enable_checkpointing
from properties.distributed import grad_tolerance
from properties.harness import build, draw_config, gpt_only, requires
from strategies import seeds, token_batches

IGNORE = -100
# the default run draws a few examples (budget); the nightly profile keeps its own depth
NIGHTLY = settings.get_current_profile_name() == "nightly"


def few(n: int) -> int:
    return 100 if NIGHTLY else n

EPS32 = torch.finfo(torch.float32).eps


def _targets(data, idx: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Next-token targets with a drawn set of ignored positions (at least one target kept)."""
    B, T = idx.shape
    gen = torch.Generator().manual_seed(data.draw(seeds(), label="target seed"))
    y = torch.randint(0, vocab_size, (B, T), generator=gen)
    keep = data.draw(st.lists(st.booleans(), min_size=B * T, max_size=B * T), label="kept targets")
    keep[data.draw(st.integers(0, B * T - 1), label="one kept")] = True
    return y.masked_fill(~torch.tensor(keep).view(B, T), IGNORE)


def _grads(model) -> list:
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _assert_grads_close(got: list, ref: list, config, n_tokens: int, what: str) -> None:
    tol = grad_tolerance(config, n_tokens, {i: g for i, g in enumerate(ref)})
    for i, (a, b) in enumerate(zip(got, ref)):
        assert (a is None) == (b is None), f"{what}: parameter {i} has a gradient in one run only"
        if a is not None:
            err = (a - b).abs().max().item() if a.numel() else 0.0
            assert err <= tol, f"{what}: gradient of parameter {i} differs by {err:.3e} > bound {tol:.3e}"


# ---------------------------------------------------------------------------------------------- 1
def _accumulated(subject, config, seed, idx, y, k: int):
    model = build(subject, config, seed, train=True)
    loss = TrainStep(model, micro_batches=k, forward=lambda x: subject.logits(model, x))(idx, y)
    return loss, _grads(model)


@settings(max_examples=few(6))
@given(data=st.data())
def test_accumulation_equals_full_batch(subject, data):
    """With N = #{t : y_t != ignore} over the whole batch and micro-batches B_1..B_k of it,
        sum_i grad (sum_{t in B_i} l_t / N) = grad ((1/N) sum_t l_t)   (exact in real arithmetic),
    whatever the n_i = #non-ignored tokens of B_i; in float64 up to summation order (the bound of
    ``properties.distributed.grad_tolerance``). The losses agree within the same bound."""
    config = draw_config(data, subject)
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, min_batch=2, max_batch=4, min_len=2), label="idx")
    y = _targets(data, idx, config.vocab_size)
    k = data.draw(st.integers(2, idx.size(0)), label="micro_batches")
    note(f"non-ignored tokens per row: {(y != IGNORE).sum(1).tolist()}")
    torch.manual_seed(seed)
    ref_loss, ref = _accumulated(subject, config, seed, idx, y, 1)
    torch.manual_seed(seed)
    loss, got = _accumulated(subject, config, seed, idx, y, k)
    tol = grad_tolerance(config, idx.numel(), {0: ref_loss})
    assert abs(loss - ref_loss).item() <= tol, f"accumulated loss {loss.item()} != full-batch {ref_loss.item()}"
    _assert_grads_close(got, ref, config, idx.numel(), f"{k} micro-batches vs one batch")


@pytest.mark.gpt_internal
def test_cross_entropy_conventions():
    """Pieces with reduction='token_mean' and the global count add up to 'mean' of the whole; ignored targets
    contribute nothing; bad arguments raise naming the argument."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 7, dtype=torch.float64, generator=g)
    y = torch.randint(0, 7, (3, 4), generator=g)
    y[0, :3] = IGNORE
    n = count_tokens(y)
    whole = cross_entropy(z, y, reduction="mean")
    parts = sum(cross_entropy(z[i:i + 1], y[i:i + 1], reduction="token_mean", num_tokens=n) for i in range(3))
    manual = -torch.log_softmax(z, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0][y != IGNORE].mean()
    assert abs(whole - manual) <= 16 * torch.finfo(torch.float64).eps * 7 * (1 + manual.abs())
    assert abs(parts - whole) <= 16 * torch.finfo(torch.float64).eps * n * (1 + whole.abs())
    for kw, match in [(dict(reduction="avg"), "reduction"), (dict(reduction="token_mean"), "num_tokens"),
                      (dict(reduction="sum", num_tokens=3), "num_tokens")]:
        with pytest.raises(ValueError, match=match):
            cross_entropy(z, y, **kw)
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(z, y.masked_fill(y == IGNORE, 7))


# ---------------------------------------------------------------------------------------------- 3
DROPOUT = dict(embd_dropout=0.1, attn_dropout=0.1, resid_dropout=0.1)


def _seeded_step(subject, config, seed, idx, y, checkpoint: bool, preserve_rng_state: bool = True):
    model = subject.build(config, seed, dtype=torch.float64).train()
    if checkpoint and not preserve_rng_state:  # the power check's broken variant
        enable_checkpointing(model, preserve_rng_state=False)
    torch.manual_seed(seed + 1)  # the dropout masks
    loss = TrainStep(model, checkpoint=checkpoint and preserve_rng_state)(idx, y)  # the production path
    return loss, _grads(model)


def _check_checkpointing(subject, config, seed, idx, y, preserve_rng_state: bool = True) -> None:
    ref_loss, ref = _seeded_step(subject, config, seed, idx, y, False)
    loss, got = _seeded_step(subject, config, seed, idx, y, True, preserve_rng_state)
    assert loss == ref_loss, f"checkpointed loss {loss.item()} != plain {ref_loss.item()}"
    _assert_grads_close(got, ref, config, idx.numel(), "activation checkpointing vs plain")


@pytest.mark.gpt_internal
@settings(max_examples=few(2))
@given(data=st.data())
def test_activation_checkpointing_changes_nothing(subject, data):
    """Per-block activation checkpointing (use_reentrant=False, preserve_rng_state=True) recomputes each
    block's forward in the backward pass with the RNG state of the first forward, so with dropout p = 0.1
    and one seed: loss_ckpt = loss_plain exactly (the forward is the same computation), and every gradient
    equal within the float64 reordering bound; the same parameters get gradients (None pattern equal)."""
    gpt_only(subject)  # checkpointing wraps gpt's `blocks`
    requires(subject, "dropout")
    config = draw_config(data, subject).replace(**DROPOUT)
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, min_batch=1, max_batch=2, min_len=2), label="idx")
    _check_checkpointing(subject, config, seed, idx, _targets(data, idx, config.vocab_size))


@pytest.mark.gpt_internal
def test_checkpointing_without_rng_preservation_is_caught(subject):
    """Power check: recomputing with fresh dropout masks (preserve_rng_state=False, the OLMo-core #828
    class) gives gradients of a different sample, and the check reports it."""
    gpt_only(subject)
    from gpt.config import Config

    config = Config(vocab_size=11, n_layer=2, n_embd=8, n_head=2, block_size=6, padding_multiple=1, **DROPOUT)
    idx = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    y = torch.roll(idx, -1, 1)
    _check_checkpointing(subject, config, 3, idx, y)
    with pytest.raises(AssertionError, match="gradient"):
        _check_checkpointing(subject, config, 3, idx, y, preserve_rng_state=False)


# ---------------------------------------------------------------------------------------------- 5
@pytest.mark.needs("dropout")
@settings(max_examples=few(4))
@given(data=st.data())
def test_mode_cycling_keeps_train_outputs(subject, data):
    """f_train(x; seed) before == f_train(x; seed) after model.train() -> eval() (one eval forward) -> train():
    switching modes toggles dropout only and leaves no state behind (bitwise)."""
    requires(subject, "dropout")
    config = draw_config(data, subject, dropout=True)  # the dropout probabilities this subject can express
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, max_batch=2), label="idx")
    model = build(subject, config, seed, train=True)
    with torch.no_grad():
        torch.manual_seed(seed)
        before = subject.logits(model, idx)
        model.eval()
        subject.logits(model, idx)
        model.train()
        torch.manual_seed(seed)
        after = subject.logits(model, idx)
    assert torch.equal(before, after), (f"train-mode outputs changed after a train -> eval -> train cycle: "
                                        f"max |difference| {(before - after).abs().max().item():.3e}")


# ---------------------------------------------------------------------------------------------- 8
def trajectory(config, seed: int, idx, y, steps: int, dtype, impl: str, lr: float = 1e-2,
               device="cpu") -> list[float]:
    """Per-step losses of ``steps`` overfit steps (TrainStep + AdamW with ``impl``: fused | foreach)."""
    from gpt.model import GPT

    torch.manual_seed(seed)
    model = GPT(config).to(dtype).train().to(device)
    idx, y = idx.to(device), y.to(device)
    kw = dict(fused=True) if impl == "fused" else dict(foreach=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1, **kw)
    step, losses = TrainStep(model), []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        losses.append(step(idx, y).item())
        opt.step()
    return losses


@pytest.mark.gpt_internal
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fused_adamw_trajectory_matches_foreach(subject, device):
    """16 overfit steps, fused vs foreach AdamW (Liger-Kernel-style convergence check).

    Both evaluate p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps) per element; they differ only in the
    rounding of a few operations per step. A Lipschitz bound through 16 AdamW steps is useless (the update's
    slope in g is up to 1/eps), so the bound is calibrated by the same-dtype rule: rounding *is* the only
    difference, hence in float32 the fused trajectory may not leave the float64 trajectory by more than
    twice what the foreach trajectory's float32 rounding does, at every step s:
        |L_fused32(s) - L64(s)| <= 2 max_{r<=s} |L_foreach32(r) - L64(r)| + 2 eps32 (1 + |L64(s)|);
    and the two float64 trajectories agree within the float32 floor (they differ by float64 roundings).
    On CUDA the same with the fused CUDA kernel (the float32 matmuls there are not TF32: torch's default).
    """
    gpt_only(subject)
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("the fused CUDA AdamW kernel needs a GPU")
    from gpt.config import Config

    config = Config(vocab_size=13, n_layer=2, n_embd=16, n_head=2, block_size=8, padding_multiple=1)
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 13, (2, 8), generator=g)
    y = torch.randint(0, 13, (2, 8), generator=g)
    ref = trajectory(config, 0, idx, y, 16, torch.float64, "foreach", device=device)
    ref_fused = trajectory(config, 0, idx, y, 16, torch.float64, "fused", device=device)
    f32 = trajectory(config, 0, idx, y, 16, torch.float32, "foreach", device=device)
    fused32 = trajectory(config, 0, idx, y, 16, torch.float32, "fused", device=device)
    assert ref[-1] < 0.5 * ref[0], f"the overfit loop does not learn: losses {ref}"
    worst = 0.0
    for s in range(16):
        floor = 2 * EPS32 * (1 + abs(ref[s]))  # two float32 roundings of the loss itself
        worst = max(worst, abs(f32[s] - ref[s]))
        assert abs(ref_fused[s] - ref[s]) <= floor, (
            f"step {s}: float64 fused AdamW loss {ref_fused[s]} vs foreach {ref[s]} beyond {floor:.2e}")
        assert abs(fused32[s] - ref[s]) <= 2 * worst + floor, (
            f"step {s}: float32 fused AdamW loss {fused32[s]} is {abs(fused32[s] - ref[s]):.2e} from the float64 "
            f"trajectory, more than twice foreach's float32 deviation {worst:.2e} + floor {floor:.2e}")
    print(f"fused32 vs float64: {max(abs(a - b) for a, b in zip(fused32, ref)):.2e}; foreach32: {worst:.2e}; "
          f"fused64 vs foreach64: {max(abs(a - b) for a, b in zip(ref_fused, ref)):.2e}")
