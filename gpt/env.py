"""Print the environment table the README records: ``python -m gpt.env``."""
from __future__ import annotations

import platform
from importlib import metadata
import sys


def environment() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu count": __import__("os").cpu_count(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else "not available",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    for dist in ("hypothesis", "transformers", "flash-attn", "flash-attn-4"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    return info


def main() -> None:
    rows = environment()
    width = max(map(len, rows))
    print(f"| {'component':<{width}} | version |\n|{'-' * (width + 2)}|---------|")
    for k, v in rows.items():
        print(f"| {k:<{width}} | {v} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
