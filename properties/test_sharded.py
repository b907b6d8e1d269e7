"""Properties: data-parallel *training* with uneven tokens per rank, DDP and FSDP2 (``properties.sharded``).

2. DDP over 2 gloo ranks, ranks holding different numbers of non-ignored targets, N AdamW steps of
   ``gpt.train.TrainStep``: at every step the gradient equals the single-process full-batch gradient (float64
   summation-order bound) and the AdamW step lands within the propagated bound; ranks agree bitwise.
6. FSDP2 (``fully_shard``) over 2 gloo ranks: the same, plus tied embeddings stay one parameter (sum of both
   gradients), also after a ``torch.distributed.checkpoint`` save/load, and the step after reloading equals
   bitwise the step without reloading.
Both run on CPU/gloo in the default suite (one shared pool, few examples); the NCCL variants are ``gpu``
tests that skip on hosts with fewer than 2 GPUs. Power checks: each broken variant of ``BROKEN`` is caught.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings, strategies as st

from gpt.config import Config
from properties.harness import draw_config, gpt_only
from properties.sharded import BROKEN, replay_check
from properties.test_ddp import ddp_pool, subject_spec  # noqa: F401  (the session's shared rank pool)
from strategies import seeds, token_batches

# one worker runs them all under xdist: they share one pool of rank processes (properties.ordering.balance_xdist)
pytestmark = [pytest.mark.xdist_group("distributed")]

IGNORE = -100
NIGHTLY = settings.get_current_profile_name() == "nightly"
# depth for the nightly profile: the default run keeps one FSDP2 and one TP configuration (budget)
deep = pytest.mark.skipif(not NIGHTLY, reason="extra configuration: runs in the nightly profile")


def _job(pool, spec, config, seed, idx, y, engine, steps, broken=None, checkpoint=False) -> list:
    return pool.run(dict(kind="train", subject=spec, config=config.to_dict(), seed=seed, idx=idx, targets=y,
                         engine=engine, steps=steps, broken=broken, checkpoint=checkpoint))


def _uneven_targets(idx: torch.Tensor, vocab_size: int, seed: int, keep_rank0: int) -> torch.Tensor:
    """Targets where rank 0's rows keep only ``keep_rank0`` targets and rank 1's rows keep all."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, vocab_size, idx.shape, generator=g)
    half = idx.size(0) // 2
    flat = y[:half].flatten()
    flat[keep_rank0:] = IGNORE
    y[:half] = flat.view(half, -1)
    return y


@settings(max_examples=20 if NIGHTLY else 1, deadline=None)
@given(data=st.data())
def test_ddp_training_uneven_tokens_equals_single_process(subject, subject_spec, ddp_pool, data):
    """grad_DDP(s) = grad_single(s) within the float64 reordering bound at each of 3 AdamW steps, with the
    ranks holding different numbers of non-ignored targets (loss = global token mean)."""
    config = draw_config(data, subject)
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, min_batch=2, max_batch=2, min_len=2), label="idx")
    y = _uneven_targets(idx, config.vocab_size, seed, data.draw(st.integers(1, idx.size(1)), label="rank-0 kept"))
    ranks = _job(ddp_pool, subject_spec, config, seed, idx, y, "ddp", steps=3)
    note(f"worst error / bound: {replay_check(ranks, subject, config, seed, idx, y)}")


FSDP_CASE = (Config(vocab_size=11, n_layer=2, n_embd=8, n_head=2, block_size=6, padding_multiple=1,
                    tie_embeddings=True), 7, torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]))


def _fsdp_available(pool) -> None:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)")


@pytest.mark.gpt_internal
@pytest.mark.parametrize("tie", [True, pytest.param(False, marks=deep)], ids=["tied", "untied"])
def test_fsdp2_training_equals_single_process(subject, subject_spec, ddp_pool, tie):
    """FSDP2 over 2 ranks, 3 AdamW steps with uneven tokens: every step's gradient and update equal the
    single-process ones (bounds as for DDP); with tie_embeddings one parameter wte.weight is lm_head.weight
    before and after a DCP save/load; one step after reloading == one step without (bitwise)."""
    gpt_only(subject)  # fully_shard wraps gpt's `blocks`
    _fsdp_available(ddp_pool)
    config, seed, idx = FSDP_CASE
    config = config.replace(tie_embeddings=tie)
    y = _uneven_targets(idx, config.vocab_size, seed, 2)
    ranks = _job(ddp_pool, subject_spec, config, seed, idx, y, "fsdp", steps=3, checkpoint=True)
    worst = replay_check(ranks, subject, config, seed, idx, y)
    r0 = ranks[0]
    assert r0["reload_tied"] == tie, "after a distributed-checkpoint load the embeddings' tie changed"
    for name, p in r0["final"].items():
        assert torch.equal(r0["loaded"][name], p), f"DCP load did not restore {name}"
        assert torch.equal(r0["reloaded_step"][name], r0["continued"][name]), (
            f"the step after a DCP save/load differs from the step without it at {name}")
    print(f"FSDP2 (tied={tie}): worst error / bound {worst}")


@pytest.mark.gpt_internal
@pytest.mark.parametrize("engine,broken", [("ddp", "dp_ranks_one"), ("ddp", "local_tokens"),
                                           ("fsdp", "dp_ranks_one"), ("fsdp", "local_tokens"),
                                           ("fsdp", "untie")])
def test_broken_data_parallel_training_is_caught(subject, subject_spec, ddp_pool, engine, broken):
    """Power check: dividing by the world size twice, a per-rank token mean, and untying the embeddings under
    FSDP are each reported by ``replay_check``."""
    gpt_only(subject)
    assert broken in BROKEN
    config, seed, idx = FSDP_CASE
    y = _uneven_targets(idx, config.vocab_size, seed, 2)
    ranks = _job(ddp_pool, subject_spec, config, seed, idx, y, engine, steps=1, broken=broken)
    with pytest.raises(AssertionError, match="gradient|tied") as caught:
        replay_check(ranks, subject, config, seed, idx, y)
    print(f"{engine}/{broken}: caught: {str(caught.value).splitlines()[0]}")


# ---------------------------------------------------------------------------------------------- 7
TP_CONFIGS = [
    Config(vocab_size=12, n_layer=2, n_embd=8, n_head=2, block_size=6, padding_multiple=1, tie_embeddings=False),
    Config(vocab_size=12, n_layer=2, n_embd=16, n_head=4, n_query_groups=2, block_size=6, padding_multiple=1,
           tie_embeddings=False, position_embedding="rope", mlp_class_name="LLaMAMLP", norm_class_name="RMSNorm",
           bias=False),
]


def _tp_check(pool, spec, subject, config, broken=None) -> float:
    from gpt.loss import cross_entropy
    from properties.distributed import grad_tolerance
    from properties.harness import assert_close64

    idx = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    y = torch.roll(idx, -1, 1)
    ranks = pool.run(dict(kind="tp", subject=spec, config=config.to_dict(), seed=3, idx=idx, targets=y,
                          broken=broken))
    model = subject.build(config, 3, dtype=torch.float64).train()
    logits = subject.logits(model, idx)
    cross_entropy(logits, y, reduction="mean").backward()
    ref = {n: p.grad for n, p in model.named_parameters()}
    tol = grad_tolerance(config, idx.numel(), ref)
    for r, out in enumerate(ranks):
        assert_close64(out["logits"], logits.detach(), config, f"rank {r} tensor-parallel logits")
        for name, g in ref.items():
            err = (out["grads"][name] - g).abs().max().item()
            assert err <= tol, (f"rank {r}: tensor-parallel gradient of {name} differs by {err:.3e} > "
                                f"bound {tol:.3e}")
    return tol


@pytest.mark.gpt_internal
@pytest.mark.parametrize("config", [TP_CONFIGS[0], pytest.param(TP_CONFIGS[1], marks=deep)],
                         ids=["gptneox-mha", "llama-gqa-rope"])
def test_tensor_parallel_equals_single_process(subject, subject_spec, ddp_pool, config):
    """parallelize_module over 2 ranks (column/row-parallel attention and MLP, vocabulary-parallel head):
    logits and every (gathered) gradient equal the single-process ones within the float64 reordering
    bounds (harness.float64_tol for logits, grad_tolerance for gradients: the row-parallel all-reduce and the
    vocabulary gather only split sums in two)."""
    gpt_only(subject)  # the plan names gpt's modules
    _tp_check(ddp_pool, subject_spec, subject, config)


@pytest.mark.gpt_internal
def test_broken_tensor_parallel_is_caught(subject, subject_spec, ddp_pool):
    """Power check: the naive column split of the fused qkv (rank 0 gets all q rows, rank 1 k and v)."""
    gpt_only(subject)
    with pytest.raises(AssertionError, match="tensor-parallel"):
        _tp_check(ddp_pool, subject_spec, subject, TP_CONFIGS[0], broken="no_permute")
