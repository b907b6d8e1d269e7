"""How the benchmark compiles and replays our step: torch.compile settings and a whole-step CUDA graph."""
from __future__ import annotations

from typing import Callable, Optional

import torch


def captured(step: Callable[[], torch.Tensor], device: torch.device) -> Callable[[], torch.Tensor]:
    """The whole training step recorded once in a CUDA graph and replayed: no kernel launches from the CPU.

    Valid because the inputs are static (the same x, y every step) and AdamW is capturable (its step count
    on the GPU). The gradients live in the graph's memory pool; replay reuses them."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture warms up on a side stream, as torch.cuda.graph's docs require
        step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return loss.clone()  # the graph's output buffer is overwritten by the next replay

    return replay


def inductor_settings(mode: str, inductor: Optional[dict] = None) -> dict:
    """The torch._inductor.config settings of a torch.compile mode, updated by ``inductor``."""
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode), **(inductor or {})}


def compile_options(mode: str, inductor: Optional[dict]) -> dict:
    """torch.compile keyword arguments: the mode, or with inductor settings the mode's settings updated by
    them (torch.compile takes a mode or options, not both)."""
    if not inductor:
        return {"mode": None if mode == "default" else mode}
    return {"options": inductor_settings(mode, inductor)}


def uses_cudagraphs(mode: str, inductor: Optional[dict] = None) -> bool:
    """Whether the compiled function runs in inductor's own CUDA graphs (reduce-overhead, max-autotune or
    ``triton.cudagraphs=True``)."""
    return bool(inductor_settings(mode, inductor).get("triton.cudagraphs"))


def parse_inductor(items: Optional[list]) -> dict:
    """``KEY=VALUE`` settings of torch._inductor.config; VALUE a Python literal (True, 2, "x") or a bare word."""
    if not items:  # importing inductor's config imports torch._dynamo (~1 s): only when asked for
        return {}
    import ast

    import torch._inductor.config as inductor_config

    known = set(inductor_config._config)
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in known:
            raise SystemExit(f"--inductor takes KEY=VALUE with KEY a torch._inductor.config setting "
                             f"(e.g. max_autotune=True), got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
