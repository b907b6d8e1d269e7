"""GPU property: attention memory. With SDPA's fused kernels (and flash-attn) the peak memory of an
attention forward + backward grows linearly with T; the math backend materialises the (T, T) score
matrix and grows quadratically. Measured at T and 2T with the inputs' own memory subtracted."""
import pytest
import torch

from gpt.attention import attend, flash_available
from properties.gpu import device

pytestmark = [pytest.mark.gpu, pytest.mark.gpt_internal]


def peak_attention_bytes(backend: str, T: int, B=2, nh=16, hs=64) -> int:
    dev = device()
    q, k, v = (torch.randn(B, nh, T, hs, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    attend(q, k, v, None, 0.0, backend).sum().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.parametrize("backend", ["sdpa", "flash", "math"])
def test_attention_memory_scaling(backend):
    """peak(2T) / peak(T) <= 2.5 for sdpa/flash (linear, with margin); >= 3.5 for math (quadratic)."""
    if backend == "flash" and not flash_available():
        pytest.skip("flash-attn is not installed")
    T = 4096
    small, large = peak_attention_bytes(backend, T), peak_attention_bytes(backend, 2 * T)
    ratio = large / small
    print(f"{backend}: peak {small / 2**20:.1f} MiB at T={T}, {large / 2**20:.1f} MiB at T={2 * T}, ratio {ratio:.2f}")
    if backend == "math":
        assert ratio >= 3.5, f"math attention memory ratio {ratio:.2f}: expected quadratic growth (~4)"
    else:
        assert ratio <= 2.5, f"{backend} attention memory ratio {ratio:.2f}: expected linear growth (~2)"
