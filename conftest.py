"""Hypothesis profiles, the --subject option, the GPU marker group and one GPU per xdist worker."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import pytest
from hypothesis import HealthCheck, Phase, settings

# parent=default: under CI=true Hypothesis loads its own "ci" profile (derandomised, no database) first,
# and profiles registered without a parent would inherit that, nightly included
_common = dict(parent=settings.get_profile("default"), deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# dev: a quick local loop. ci: derandomised, so a red run is reproduced by rerunning it.
# nightly: 20x ci's examples, random, with the example database replaying past failures first.
settings.register_profile("dev", max_examples=8, **_common)
settings.register_profile("ci", max_examples=20, derandomize=True, **_common)
settings.register_profile("nightly", max_examples=400, **_common)
settings.register_profile("replay", max_examples=1, phases=[Phase.explicit, Phase.reuse], **_common)
settings.load_profile("ci" if os.environ.get("CI") else "dev")  # --hypothesis-profile overrides this


def pytest_addoption(parser):
    parser.addoption("--subject", default=None,
                     help="implementation under test: gpt, gpt-math, gpt-sdpa, hf-gpt2, hf-neox, hf-llama, "
                          "or package.module:factory (default: $GPT_PROPERTIES_SUBJECT or gpt)")


@pytest.fixture(scope="session")
def subject(request):
    from properties.subject import load_subject

    return load_subject(request.config.getoption("--subject"))


@pytest.fixture(autouse=True)
def _needs_capabilities(request):
    """``@pytest.mark.needs("kv_cache", ...)``: skip, naming the property and the missing capability."""
    marker = request.node.get_closest_marker("needs")
    if marker:
        from properties.harness import requires

        requires(request.getfixturevalue("subject"), *marker.args)


def pytest_report_header(config):
    spec = config.getoption("--subject") or os.environ.get("GPT_PROPERTIES_SUBJECT") or "gpt"
    return [f"gpt-properties subject: {spec}; hypothesis profile: {settings._current_profile}"]


# ---------------------------------------------------------------- one GPU per xdist worker
# Under `pytest -m gpu -n N` worker gwK takes GPU K mod (GPU count), so the GPU group scales with the GPUs
# and shares them round-robin when N exceeds the count; one GPU and `-n 1` are the case K mod 1 = 0.
# GPT_PROPERTIES_PIN_GPU=0 turns pinning off.
PIN_ENV = "GPT_PROPERTIES_PIN_GPU"


@dataclass(frozen=True)
class GpuPin:
    """What pytest_configure did: worker gwK owns ``visible[K % count]``, its ``device`` in this process."""

    worker: int  # K of gwK; 0 without xdist
    visible: tuple  # CUDA_VISIBLE_DEVICES entries before pinning (ordinals, or UUIDs if the user gave them)
    method: str  # "CUDA_VISIBLE_DEVICES" (rotated), "set_device" (fallback) or "none"

    @property
    def count(self) -> int:
        return len(self.visible)

    @property
    def entry(self) -> str:
        """The GPU this worker owns, as an entry of the original CUDA_VISIBLE_DEVICES."""
        return self.visible[self.worker % self.count]

    @property
    def device(self):
        """torch.device of the owned GPU in this process (cuda:0 after the rotation)."""
        import torch

        return torch.device("cuda", self.worker % self.count if self.method == "set_device" else 0)


_gpu_pin: Optional[GpuPin] = None


def _cuda_driver_initialised() -> bool:
    """Whether this process already called cuInit (then CUDA_VISIBLE_DEVICES changes no longer apply)."""
    import ctypes

    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    n = ctypes.c_int(0)
    return libcuda.cuDeviceGetCount(ctypes.byref(n)) != 3  # 3: CUDA_ERROR_NOT_INITIALIZED


def _pin_worker_gpu() -> Optional[GpuPin]:
    """Pin this xdist worker to its GPU, before anything initialises CUDA.

    Preferred: rotate CUDA_VISIBLE_DEVICES so the worker's GPU comes first. Then "cuda" and cuda:0 mean the
    worker's GPU in every thread and in every child process (DDP ranks), and the other GPUs stay visible,
    in order after it, for multi-GPU tests. Needs the device count from NVML (torch.cuda.device_count()
    does not initialise CUDA when NVML answers). If CUDA was initialised already, fall back to
    torch.cuda.set_device (the current device of this thread).
    """
    try:
        import torch
    except ImportError:
        return None
    if not torch.backends.cuda.is_built():
        return None
    count = torch.cuda.device_count()  # NVML first: no CUDA initialisation
    if count < 1:
        return None
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = tuple(e.strip() for e in env.split(","))[:count] if env else tuple(str(i) for i in range(count))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and worker[2:].isdigit()) or os.environ.get(PIN_ENV, "1") == "0":
        return GpuPin(0, visible, "none")  # one process owns them all; worker 0's GPU is the default
    pin_index = int(worker[2:])
    k = pin_index % count
    if not torch.cuda.is_initialized() and not _cuda_driver_initialised():
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible[k:] + visible[:k])
        return GpuPin(pin_index, visible, "CUDA_VISIBLE_DEVICES")
    torch.cuda.set_device(k)
    return GpuPin(pin_index, visible, "set_device")


def pytest_configure(config):
    global _gpu_pin
    _gpu_pin = _pin_worker_gpu()
    # The drawn models are tiny: intra-op threads only add synchronisation, and under xdist every worker
    # would spawn one per core (measured: the suite runs ~4x faster serially with one thread).
    # GPT_PROPERTIES_THREADS=N overrides.
    import torch

    torch.set_num_threads(int(os.environ.get("GPT_PROPERTIES_THREADS", "1")))


@pytest.fixture(scope="session")
def gpu_pin() -> GpuPin:
    """How this worker was pinned; GPU tests compute on ``gpu_pin.device`` (== properties.gpu.device())."""
    if _gpu_pin is None:
        pytest.skip("needs a CUDA device")
    return _gpu_pin


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; the gpu group runs with `pytest -m gpu` on a GPU host")
    for item in items:
        if item.get_closest_marker("gpu"):  # not item.keywords: those also hold directory names
            item.add_marker(skip)
