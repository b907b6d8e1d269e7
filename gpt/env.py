"""Print the environment table the README records: ``python -m gpt.env``."""
from __future__ import annotations

import platform
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
    for pkg in ("hypothesis", "transformers", "flash_attn"):
        try:
            info[pkg] = __import__(pkg).__version__
        except ImportError:
            info[pkg] = "not installed"
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
