"""One GPU per xdist worker, decided before anything initialises CUDA (called from the plugin's
pytest_configure; the ``gpu_pin`` fixture hands GPU tests the result)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

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


PIN: Optional[GpuPin] = None  # set by configure()


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


def configure() -> None:
    global PIN
    PIN = _pin_worker_gpu()
