"""What a timed run needs from its machine: the device, autocast, peak memory and the versions to quote.

Shared by the benchmark (``gpt.bench``) and the overfit smoke command (``gpt.overfit``)."""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from typing import Optional

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_MEMORY_KIND = "cpu: rise of peak RSS (ru_maxrss) over model build + steps, fresh process per model"
CUDA_MEMORY_KIND = "cuda: torch.cuda.max_memory_allocated over model build + steps"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return device


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision as it is trained: fp32 weights, matmuls in ``dtype``. float32 is a no-op."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_peak_rss_mib() -> float:
    """The process's high-water resident set size; ru_maxrss is KiB on Linux and bytes on macOS."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class PeakMemory:
    """Peak memory from ``start()`` on: CUDA allocator peak, or on CPU the rise of the process peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = CUDA_MEMORY_KIND if device.type == "cuda" else CPU_MEMORY_KIND
        self.start()

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = 0.0  # max_memory_allocated counts everything live, which is what we want
        else:
            self.base = cpu_peak_rss_mib()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return cpu_peak_rss_mib() - self.base

    def process_peak_mib(self) -> float:
        """The absolute figure (CPU: whole-process peak RSS, including the Python runtime and torch)."""
        return self.peak_mib() if self.device.type == "cuda" else cpu_peak_rss_mib()


def versions(device: Optional[torch.device] = None) -> dict:
    """Enough of the environment to reproduce a figure; package versions come from metadata, no imports."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    for pkg in ("transformers", "omegaconf", "tqdm", "matplotlib"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):  # CPU figures on a shared machine mean little without this
        info["load_average_1m"] = os.getloadavg()[0]
    return info
