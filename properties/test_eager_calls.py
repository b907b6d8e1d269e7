"""gpt.eager.outside_graphs, how gpt keeps host-syncing code out of torch.compile's graphs without importing
torch._dynamo at import time:

  - ``import gpt`` (and the two modules using it, gpt.varlen and gpt.fused_loss) leaves torch._dynamo
    unimported: 'torch._dynamo' not in sys.modules (a process that never compiles never pays for it);
  - under torch.compile a call is exactly one graph break (graphs = 2, breaks = 1 for f(x) = g(2 x) + 1
    with g wrapped), and compiled f(x) == eager f(x) bitwise, on the first trace and on a retrace.
"""
import subprocess
import sys

import pytest
import torch

from gpt.eager import outside_graphs

pytestmark = pytest.mark.gpt_internal


def test_import_gpt_does_not_import_dynamo():
    probe = "import sys, gpt, gpt.varlen, gpt.fused_loss; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "import gpt imported torch._dynamo (a module-level torch.compiler.disable?)"


@outside_graphs
def _g(x):
    return x * x.sum()  # traceable: without outside_graphs Dynamo inlines it, one graph and no break


def _f(x):
    return _g(x * 2) + 1


def test_outside_graphs_is_one_graph_break_and_matches_eager():
    import torch._dynamo

    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eager = _f(x)
    for trace in ("first", "retrace"):  # the first trace builds the disabled copy, the retrace reuses it
        torch._dynamo.reset()
        explained = torch._dynamo.explain(_f)(x)
        assert (explained.graph_count, explained.graph_break_count) == (2, 1), (trace, explained.break_reasons)
        assert torch.equal(torch.compile(_f, backend="eager")(x), eager), trace
    torch._dynamo.reset()
