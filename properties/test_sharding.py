"""Sharded Hypothesis properties (properties/sharding.py): under ``--shards K`` a ``@given`` test of n
examples becomes k = min(K, n // 5) items running n // k (+1) examples each, together exactly n; shard s
draws from seed hash(base, test, s), so the shards draw different examples, and the rerun command printed
with a failing shard redraws the same ones."""
import re
import shlex

import pytest
from hypothesis import core, settings

from properties.sharding import MIN_EXAMPLES, shard_count, shard_seed, split

pytest_plugins = ["pytester"]
PLUGINS = ("-p", "properties.plugin", "-p", "no:benchmark")  # pytest-benchmark, where installed, warns under xdist

PROPERTIES = '''
import os
from hypothesis import given, settings, strategies as st

def log(x):
    with open(os.environ["DRAWS"], "a") as f:
        f.write(os.environ["PYTEST_CURRENT_TEST"].split(" ")[0] + f" {x}\\n")

@settings(max_examples=20)
@given(x=st.integers(0, 2**62))
def test_draws(x):
    log(x)

@settings(max_examples=12)
@given(x=st.integers(0, 2**62))
def test_few(x):
    log(x)

class TestMethods:
    @settings(max_examples=10)
    @given(x=st.integers(0, 2**62))
    def test_method(self, x):
        log(x)

@settings(max_examples=10)
@given(x=st.integers(0, 2**62))
def test_fails(x):
    log(x)
    assert x == 0
'''


class _Config:
    def __init__(self, shards=None):
        self.opts = {"--shards": shards, "hypothesis_seed": None, "hypothesis_profile": None}

    def getoption(self, name, default=None):
        return self.opts.get(name, default)


def test_shard_count_defaults_to_one_outside_nightly(monkeypatch):
    """ci/dev: one item per property (node ids unchanged); --shards K asks for K; K < 1 is refused; a test's
    examples split evenly over at most n // MIN_EXAMPLES shards, summing to n."""
    monkeypatch.delenv("GPT_PROPERTIES_SHARDS", raising=False)
    expected = 16 if settings.get_current_profile_name() == "nightly" else 1
    assert shard_count(_Config()) == expected
    assert shard_count(_Config(shards=5)) == 5
    with pytest.raises(pytest.UsageError, match="--shards"):
        shard_count(_Config(shards=0))
    monkeypatch.setenv("GPT_PROPERTIES_SHARDS", "many")
    with pytest.raises(pytest.UsageError, match="GPT_PROPERTIES_SHARDS"):
        shard_count(_Config())
    assert shard_seed(7, "t.py::f[shard]", 1) == shard_seed(7, "t.py::f[shard]", 1) != shard_seed(7, "t.py::f[shard]", 2)
    for total, shards, sizes in ((400, 16, [25] * 16), (20, 16, [5] * 4), (12, 4, [6, 6]), (23, 3, [8, 8, 7]),
                                 (2 * MIN_EXAMPLES - 1, 16, [9]), (1, 16, [1])):
        assert [s.examples for s in split(total, shards)] == sizes, (total, shards)


def _draws(path):
    by_shard: dict = {}
    for line in path.read_text().splitlines():
        node, x = line.rsplit(" ", 1)
        by_shard.setdefault(node, []).append(int(x))
    return by_shard


def test_shards_split_the_budget_and_a_failing_shard_reruns(pytester, monkeypatch):
    """--shards 4: 20 examples -> 4 items of 5 drawing different examples; 12 -> 2 items of 6; test methods
    shard too; a failing shard's report prints a command that redraws exactly its examples."""
    pytester.makepyfile(test_tiny=PROPERTIES)
    draws = pytester.path / "draws.txt"
    monkeypatch.setenv("DRAWS", str(draws))
    forced = core.global_force_seed  # --hypothesis-seed sets it for the whole process
    try:
        result = pytester.runpytest_inprocess(*PLUGINS, "-p", "no:cacheprovider", "--shards", "4",
                                              "--hypothesis-seed", "12345")
        result.assert_outcomes(passed=8, failed=2)
        by_shard = _draws(draws)
        counts = {node.removeprefix("test_tiny.py::"): len(xs) for node, xs in by_shard.items()
                  if "fails" not in node}
        assert counts == {**{f"test_draws[shard{s}of4]": 5 for s in range(4)},
                          "test_few[shard0of2]": 6, "test_few[shard1of2]": 6,
                          "TestMethods::test_method[shard0of2]": 5, "TestMethods::test_method[shard1of2]": 5}
        # every shard starts from Hypothesis' simplest example (0); the rest must differ by shard
        assert len(set().union(*(by_shard[f"test_tiny.py::test_draws[shard{s}of4]"] for s in range(4)))) >= 14
        failing = "test_tiny.py::test_fails[shard1of2]"
        reruns = {shlex.split(cmd)[0]: cmd for cmd in re.findall(r"rerun this shard: python -m pytest (.*)",
                                                                  result.stdout.str())}
        rerun = reruns[failing]
        assert set(reruns) == {failing, failing.replace("shard1", "shard0")}
        assert "--shards 4" in rerun and "--hypothesis-seed 12345" in rerun, rerun
        draws.unlink()
        again = pytester.runpytest_inprocess(*PLUGINS, *shlex.split(rerun))
        again.assert_outcomes(failed=1)
    finally:
        core.global_force_seed = forced
    assert _draws(draws) == {failing: by_shard[failing]}


def test_default_run_keeps_one_item_per_property(pytester, monkeypatch):
    """Without --shards, outside nightly: one item per property, node ids as without the plugin."""
    monkeypatch.delenv("GPT_PROPERTIES_SHARDS", raising=False)
    pytester.makepyfile(test_tiny=PROPERTIES)
    items, _ = pytester.inline_genitems(*PLUGINS)
    names = [item.nodeid.removeprefix("test_tiny.py::") for item in items]
    if settings.get_current_profile_name() == "nightly":  # this run's profile is the inner run's default
        assert len(names) == 4 + 2 + 2 + 2, names
    else:
        assert names == ["test_draws", "test_few", "TestMethods::test_method", "test_fails"]
