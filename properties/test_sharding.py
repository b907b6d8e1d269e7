"""Sharded Hypothesis properties (properties/sharding.py): under ``--shards K`` a ``@given`` test becomes K
items; shard s runs ceil(max_examples / K) examples from seed hash(base, test, s), so the shards draw
different examples, together the profile's budget, and the same base seed redraws the same ones."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import settings

from properties.sharding import shard_count, shard_seed

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = textwrap.dedent('''
    import os
    from hypothesis import given, strategies as st

    @given(x=st.integers(0, 2**62))
    def test_draws(x):
        with open(os.environ["DRAWS"], "a") as f:
            f.write(os.environ["PYTEST_CURRENT_TEST"].split(" ")[0] + f" {x}\\n")
''')


def _config(shards=None):
    opts = {"--shards": shards, "hypothesis_seed": None, "hypothesis_profile": None}
    return SimpleNamespace(getoption=lambda name, default=None: opts.get(name, default))


def test_shard_count_defaults_to_one_outside_nightly(monkeypatch):
    """ci/dev: one item per property (node ids unchanged); --shards K asks for K; K < 1 is refused."""
    monkeypatch.delenv("GPT_PROPERTIES_SHARDS", raising=False)
    expected = 16 if settings.get_current_profile_name() == "nightly" else 1
    assert shard_count(_config()) == expected
    assert shard_count(_config(shards=5)) == 5
    with pytest.raises(pytest.UsageError, match="--shards"):
        shard_count(_config(shards=0))
    assert shard_seed(7, "t.py::f[shard]", 1) == shard_seed(7, "t.py::f[shard]", 1) != shard_seed(7, "t.py::f[shard]", 2)


@pytest.mark.repo
def test_shards_split_the_budget_with_independent_draws(tmp_path):
    """--shards 4 under nightly (400 examples): 4 items of 100 examples each, no draw shared by two shards."""
    (tmp_path / "test_tiny.py").write_text(PROPERTY)
    draws = tmp_path / "draws.txt"
    env = {**os.environ, "DRAWS": str(draws), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_tiny.py", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-profile", "nightly", "--shards", "4", "--hypothesis-seed", "12345"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "4 passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    by_shard: dict = {}
    for line in draws.read_text().splitlines():
        node, x = line.rsplit(" ", 1)
        by_shard.setdefault(node, []).append(int(x))
    assert sorted(by_shard) == [f"test_tiny.py::test_draws[shard{s}of4]" for s in range(4)], sorted(by_shard)
    assert all(len(xs) == 100 for xs in by_shard.values()), {k: len(v) for k, v in by_shard.items()}
    # Hypothesis favours a few boundary values (0, 2**62, ...) in every run; the rest must differ by shard
    assert len(set().union(*by_shard.values())) > 300, "the shards drew the same examples"
