"""Property: data parallelism. One DistributedDataParallel step over 2 ranks, each holding half of the
batch, gives the gradients of one process on the whole batch (mean loss over all of it), in float64 up to
summation order (bound derived in ``properties.distributed.grad_tolerance``); after one optimizer step
(SGD or AdamW) every rank holds bitwise the same parameters, equal to the single-process step's.

Runs on the CPU with gloo (2 spawned ranks) and, on hosts with >= 2 GPUs, on CUDA with NCCL (one GPU per
rank, marked ``gpu``). The ranks are started once per session (``DDPPool``) and take one job per example.
The property's power is checked too: with a broken gradient all-reduce the same check must fail.
A failure prints a ``reproduce(DDPCase(...))`` line that reruns the case without pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, note, strategies as st

from gpt.config import Config
from properties.distributed import BROKEN_HOOKS, DDPCase, DDPPool, check_case, default_devices, shared_pool
from properties.harness import draw_config, gpt_only
from properties.subject import ENV_VAR
from strategies import seeds, token_batches

# one worker runs them all under xdist: they share one pool of rank processes (properties.ordering.balance_xdist)
pytestmark = [pytest.mark.xdist_group("distributed")]

WORLD_SIZE = 2


def _nccl_devices() -> list:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < WORLD_SIZE:
        pytest.skip(f"the NCCL DDP property needs >= {WORLD_SIZE} GPUs (one per rank); this host has {n}")
    if not torch.distributed.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    return default_devices("nccl", WORLD_SIZE)


@pytest.fixture(scope="session", params=[
    pytest.param("gloo", id="cpu-gloo"),
    pytest.param("nccl", id="cuda-nccl", marks=pytest.mark.gpu),
])
def ddp_pool(request):
    """A persistent process group of WORLD_SIZE ranks, one per backend and session (xdist worker)."""
    backend = request.param
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    devices = _nccl_devices() if backend == "nccl" else default_devices(backend, WORLD_SIZE)
    yield shared_pool(backend, WORLD_SIZE, devices)  # one pool per session, shared with test_sharded.py


@pytest.fixture(scope="session")
def subject_spec(request) -> str:
    """The --subject spec, which the rank processes load for themselves."""
    return request.config.getoption("--subject") or os.environ.get(ENV_VAR) or "gpt"


def draw_ddp_case(data, subject, world_size: int = WORLD_SIZE) -> DDPCase:
    """A tiny dropout-free config, an init seed, a batch of world_size * k rows and an optimizer."""
    config = draw_config(data, subject)
    seed = data.draw(seeds(), label="seed")
    rows = world_size * data.draw(st.integers(1, 2), label="rows per rank")
    idx = data.draw(token_batches(config, min_batch=rows, max_batch=rows), label="idx")
    optimizer = data.draw(st.sampled_from(["sgd", "adamw"]), label="optimizer")
    return DDPCase(config, seed, idx.tolist(), optimizer)


def _note_reproduction(case: DDPCase, pool: DDPPool, spec: str, hook=None, say=note) -> None:
    extra = f", hook={hook!r}" if hook else ""
    say("reproduce: from gpt.config import Config; from properties.distributed import DDPCase, reproduce; "
        f"reproduce({case!r}, backend={pool.backend!r}, subject={spec!r}{extra})")


@given(data=st.data())
def test_ddp_step_equals_single_process_step(subject, subject_spec, ddp_pool, data):
    """DDP over 2 ranks with half the batch each == one process on the whole batch: gradients within the
    float64 summation-order bound, and after one SGD/AdamW step the same parameters on every rank (bitwise)
    and equal to the single-process step's (within the bound propagated through the update)."""
    case = draw_ddp_case(data, subject, ddp_pool.world_size)
    _note_reproduction(case, ddp_pool, subject_spec)
    worst = check_case(ddp_pool, subject, subject_spec, case)
    note(f"worst errors and tolerances: {worst}")


# A fixed case whose two halves differ, so that a missing all-reduce changes every rank's gradient too.
POWER_CASE = DDPCase(Config(vocab_size=11, n_layer=2, n_embd=8, n_head=2, block_size=6, padding_multiple=1),
                     seed=1234, idx=[[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], optimizer="sgd")


@pytest.mark.gpt_internal
@pytest.mark.parametrize("hook", [None, "allreduce", *BROKEN_HOOKS])
def test_broken_gradient_allreduce_is_caught(subject, subject_spec, ddp_pool, hook):
    """The property has power: with a comm hook that sums without dividing by the world size, or skips the
    all-reduce, the check reports a gradient mismatch; DDP's own reduction and torch's reference
    allreduce_hook pass on the same case (so the failure is the hook's)."""
    # this checks the property's power, not the subject: it needs a subject that expresses POWER_CASE
    gpt_only(subject)
    _note_reproduction(POWER_CASE, ddp_pool, subject_spec, hook, say=print)
    if hook in BROKEN_HOOKS:
        with pytest.raises(AssertionError, match="gradient") as caught:
            check_case(ddp_pool, subject, subject_spec, POWER_CASE, hook=hook)
        print(f"{hook}: caught: {caught.value}")
    else:
        worst = check_case(ddp_pool, subject, subject_spec, POWER_CASE, hook=hook)
        assert worst["grad_err"] <= worst["grad_tol"]


@pytest.mark.gpu
@pytest.mark.gpt_internal
def test_xdist_worker_owns_its_gpu(gpu_pin):
    """Under `pytest -n N`, worker gwK computes on GPU K mod (GPU count), and nowhere else by default:
    the current device is the pinned one, and it is physically the GPU listed K mod count in the original
    CUDA_VISIBLE_DEVICES (same UUID as a fresh process shown only that GPU). Holds for one GPU, -n 1 and
    no xdist (K = 0)."""
    from properties.gpu import device

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if gpu_pin.method == "none" and "PYTEST_XDIST_WORKER" in os.environ:
        pytest.skip("GPU pinning is turned off (GPT_PROPERTIES_PIN_GPU=0)")
    k = int(worker[2:]) % gpu_pin.count
    assert device() == gpu_pin.device, f"current device {device()} is not the pinned {gpu_pin.device}"
    assert torch.zeros(1, device="cuda").device == gpu_pin.device, "'cuda' does not mean the pinned GPU"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu_pin.visible[k]}
    probe = "import torch; print(torch.cuda.get_device_properties(0).uuid)"
    expected = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    actual = str(torch.cuda.get_device_properties(gpu_pin.device).uuid)
    print(f"{worker}: pinned by {gpu_pin.method} to {gpu_pin.visible[k]} of {gpu_pin.visible} ({actual})")
    assert actual == expected, (f"{worker} computes on GPU {actual}, but should own GPU {gpu_pin.visible[k]} "
                                f"({expected}) = worker {worker[2:]} mod {gpu_pin.count}")
