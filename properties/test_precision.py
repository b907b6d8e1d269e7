"""Declared working precision both ways, on fixed examples (examples/float32_islands.py): a correct model
with float32 RMSNorm and RoPE tables passes the bound derived from float32's unit roundoff
(properties.harness.reordering_tol) where the float64 bound flags its islands, and a planted causal-mask
bug is still caught by the float32 bound. Comparison helpers name non-finite values as such."""
import pytest
import torch

from gpt.config import Config
from properties.harness import assert_close64, assert_close_subject

pytestmark = pytest.mark.repo
# examples/ is not installed: imported lazily, so that collecting this module from a package never fails


def _examples():
    from examples import float32_islands

    return float32_islands

CONFIG = Config(vocab_size=48, padding_multiple=1, block_size=12, n_layer=2, n_head=2, n_embd=16,
                intermediate_size=40, position_embedding="rope", norm_class_name="RMSNorm",
                mlp_class_name="LLaMAMLP", bias=False)
IDX = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]])


def _relativity(subject, seed):
    model = subject.build(CONFIG, seed).eval()
    with torch.no_grad():
        return model(IDX, input_pos=4), model(IDX)


def test_declared_float32_islands_pass_and_undeclared_fail():
    """|f(x, positions + s) - f(x)| fits the float32 working-precision bound for every seed; with the
    islands undeclared the float64 bound rejects it for at least one of the same seeds (the islands are
    real), so the declaration is what makes a correct float32-island model pass."""
    flagged = 0
    for seed in range(4):
        ex = _examples()
        shifted, plain = _relativity(ex.IslandSubject(), seed)
        assert_close_subject(ex.IslandSubject(), shifted, plain, CONFIG, "declared islands")
        try:
            assert_close_subject(ex.UndeclaredSubject(), shifted, plain, CONFIG, "undeclared islands")
        except AssertionError as e:
            assert "float64 reordering bound" in str(e)
            flagged += 1
    assert flagged, "the float64 bound never saw the float32 islands: this check has no power"


def test_planted_causal_bug_is_caught_at_float32_precision():
    """With the mask off by one, changing a later token changes earlier logits by far more than the float32
    bound, for every seed."""
    subject = _examples().BuggyIslandSubject()
    perturbed = IDX.clone()
    perturbed[:, 5] = (perturbed[:, 5] + 1) % CONFIG.vocab_size
    for seed in range(3):
        model = subject.build(CONFIG, seed).eval()
        with torch.no_grad():
            a, b = model(IDX), model(perturbed)
        with pytest.raises(AssertionError, match="float32 working-precision bound"):
            assert_close_subject(subject, b[:, :5], a[:, :5], CONFIG, "logits before the changed token")


def test_non_finite_values_are_named_not_a_tolerance_miss():
    """A NaN in either operand is reported as non-finite, with its position."""
    ref = torch.zeros(2, 3, 4, dtype=torch.float64)
    bad = ref.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(AssertionError, match=r"non-finite result: nan at \(1, 2, 3\)"):
        assert_close64(bad, ref, CONFIG, "probe")
    with pytest.raises(AssertionError, match=r"non-finite reference: nan at \(1, 2, 3\)"):
        assert_close64(ref, bad, CONFIG, "probe")
