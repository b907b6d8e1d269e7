"""Seeds, dtypes and devices."""
from __future__ import annotations

import torch
from hypothesis import strategies as st


def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch.manual_seed: a failure is reproduced from the printed config and seed."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def float_dtypes(low_precision: bool = True) -> st.SearchStrategy[torch.dtype]:
    choices = [torch.float64, torch.float32]
    if low_precision:
        choices += [torch.bfloat16, torch.float16]
    return st.sampled_from(choices)


def devices() -> st.SearchStrategy[str]:
    return st.sampled_from(["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
