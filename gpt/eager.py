"""Functions that run outside torch.compile's graphs, without importing torch._dynamo at import time.

``@torch.compiler.disable`` at a module's top level imports torch._dynamo (1.1 s on a laptop, 5.6 s on a
16-core host), which every process that imports ``gpt`` paid, also the many that never compile (test
workers, a user's conformance run). ``outside_graphs`` calls the function directly in eager code and hands
the disabled copy to Dynamo only while it traces (``torch.compiler.is_compiling()`` is a constant there):
the same single graph break at the call as the decorator, and compiled == eager.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

_disabled: dict = {}  # fn -> torch.compiler.disable(fn), built on the first traced call; a plain dict Dynamo reads


def outside_graphs(fn: Callable) -> Callable:
    """``fn`` unchanged in eager code; under torch.compile, a graph break around each call (it runs eagerly)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        disabled = _disabled.get(fn)
        if disabled is None:  # first trace: creating it is itself a break, the call below another
            disabled = _disabled[fn] = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)
    return call
