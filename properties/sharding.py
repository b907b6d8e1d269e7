"""Shard each Hypothesis property into independent items, so that one property's examples spread over
xdist workers.

``--shards K`` (default: 16 under the ``nightly`` profile, 1 otherwise, so ``ci`` node ids never change;
``$GPT_PROPERTIES_SHARDS`` overrides) parametrizes every ``@given`` test with ``shard``, node ids
``test_x[...-shard3of16]``. A test of n examples gets k = min(K, n // MIN_EXAMPLES) shards (none when
k = 1), shard s running n // k examples (one more for s < n % k), so the shards together run exactly the
test's budget; shards run the test's explicit ``@example``s in shard 0 only. Each shard draws from its own
seed, hash(base seed, the test's node id without the shard, s), so the shards draw independent examples.
The base seed is ``--hypothesis-seed`` when given, the test's own ``@seed``, a constant for a test whose
settings ``derandomize`` (a sharded ci run stays deterministic), else drawn once per session in the
controller, handed to every xdist worker, and printed in the header. A failing shard's report names its
node id and the command that redraws its examples (``--hypothesis-seed <base>`` and the same ``--shards``).
The example database keeps Hypothesis' key (one per test; per node id, so per shard, for a
``@pytest.mark.parametrize``d test), so a saved failure is replayed first by the shards of the next run
that share the key; the printed ``@reproduce_failure`` blob works as without shards.

Why a floor of MIN_EXAMPLES examples per shard: Hypothesis starts every run with the simplest example, the
same in every shard; a 20-example property cut into 16 shards of 2 would run that one example 16 times
(16 of its 32 runs; measured with the earlier ceil(n / K) split). With at least 5 per shard, at most a fifth
of a shard's runs repeat another shard's.
"""
from __future__ import annotations

import hashlib
import os
import random
import shlex
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings

from properties import ordering

SEED_KEY = "gpt_properties_shard_seed"
MIN_EXAMPLES = 5
DERANDOMIZED_BASE = "derandomize"  # the base seed of a test whose settings derandomize


@dataclass(frozen=True)
class Shard:
    index: int
    count: int  # this test's shards: min(K, its examples // MIN_EXAMPLES)
    examples: int  # this shard's share of
    total: int  # the test's max_examples

    def __str__(self) -> str:  # the node id's part
        return f"shard{self.index}of{self.count}"


def split(total: int, shards: int) -> list[Shard]:
    """The test's examples over min(shards, total // MIN_EXAMPLES) shards, as even as possible, summing
    to total; a single Shard means: do not shard."""
    k = max(1, min(shards, total // MIN_EXAMPLES))
    return [Shard(s, k, total // k + (s < total % k), total) for s in range(k)]


def shard_count(config) -> int:
    value = config.getoption("--shards")
    if value is None:
        value = os.environ.get("GPT_PROPERTIES_SHARDS")
    if value is None:
        return 16 if _profile(config) == "nightly" else 1
    try:
        shards = int(value)
    except ValueError:
        shards = 0
    if shards < 1:
        raise pytest.UsageError(f"--shards / $GPT_PROPERTIES_SHARDS must be an integer >= 1 (1: no sharding), "
                                f"got {value!r}")
    return shards


def _profile(config) -> str:  # read from the option: Hypothesis may load the profile after this plugin
    return config.getoption("hypothesis_profile", None) or settings.get_current_profile_name()


def _base_seed(config) -> int | str:  # --hypothesis-seed may be any string
    if hasattr(config, "workerinput") and SEED_KEY in config.workerinput:
        return config.workerinput[SEED_KEY]
    forced = config.getoption("hypothesis_seed", None)
    if forced is not None:
        return forced
    if not hasattr(config, "_gpt_properties_seed"):
        config._gpt_properties_seed = random.SystemRandom().randrange(2**32)
    return config._gpt_properties_seed


def _item_base(item, test_settings, own_seed):
    """The base seed of this item's shards (see the module docstring for the order)."""
    if item.config.getoption("hypothesis_seed", None) is not None:
        return _base_seed(item.config)
    if own_seed is not None:
        return own_seed
    return DERANDOMIZED_BASE if test_settings.derandomize else _base_seed(item.config)


def _shard(item):
    callspec = getattr(item, "callspec", None)
    shard = callspec.params.get("shard") if callspec is not None else None
    return shard if isinstance(shard, Shard) else None


def shard_seed(base, nodeid: str, shard: int) -> int:
    text = f"{base}:{nodeid}:{shard}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


class ShardPlugin:
    def __init__(self, config) -> None:
        self.config = config
        self._shards = None

    @property
    def shards(self) -> int:  # first read at collection, once every plugin has configured
        if self._shards is None:
            self._shards = shard_count(self.config)
        return self._shards

    def pytest_configure_node(self, node):  # xdist controller: every worker gets the same base seed
        node.workerinput[SEED_KEY] = _base_seed(self.config)

    def pytest_report_header(self, config):
        if self.shards > 1:
            return (f"gpt-properties: each Hypothesis property in up to {self.shards} shards of >= {MIN_EXAMPLES} "
                    f"examples, base seed {_base_seed(config)} (rerun one with --hypothesis-seed "
                    f"{_base_seed(config)} --shards {self.shards})")

    def pytest_generate_tests(self, metafunc):
        fn = metafunc.function
        if self.shards == 1 or not getattr(fn, "is_hypothesis_test", False):
            return
        shards = split(fn._hypothesis_internal_use_settings.max_examples, self.shards)
        if len(shards) > 1:
            metafunc.fixturenames.append("shard")  # a pseudo-argument: the test body never receives it
            metafunc.parametrize("shard", shards, ids=str)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        """Outside Hypothesis' own wrapper (registered later): the shard's settings and seed are in place
        when it reads them."""
        shard = _shard(item)
        if shard is None:
            yield
            return
        test = getattr(item.obj, "__func__", item.obj)  # the @given wrapper; a method's function
        saved = test._hypothesis_internal_use_settings, test._hypothesis_internal_use_seed
        phases = saved[0].phases if shard.index == 0 else tuple(p for p in saved[0].phases if p != Phase.explicit)
        base_id = ordering.plain_id(item.nodeid).replace(str(shard), "shard")  # the same under loadgroup
        # differing_executors: a test method runs on a fresh instance per item, as for any parametrized
        # test, for which Hypothesis' own pytest plugin turns this check off too
        test._hypothesis_internal_use_settings = settings(
            saved[0], max_examples=shard.examples, phases=phases,
            suppress_health_check={HealthCheck.differing_executors, *saved[0].suppress_health_check})
        test._hypothesis_internal_use_seed = shard_seed(_item_base(item, *saved), base_id, shard.index)
        try:
            yield
        finally:
            test._hypothesis_internal_use_settings, test._hypothesis_internal_use_seed = saved

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        """A failing shard's report says which shard it is and how to redraw its examples."""
        report = (yield).get_result()
        shard = _shard(item)
        if shard is None or report.when != "call" or not report.failed:
            return
        test = getattr(item.obj, "__func__", item.obj)
        base = _item_base(item, test._hypothesis_internal_use_settings, test._hypothesis_internal_use_seed)
        spec = item.config.getoption("--subject", None)
        profile = _profile(item.config)
        seed = "" if base == DERANDOMIZED_BASE else f" --hypothesis-seed {shlex.quote(str(base))}"
        report.sections.append(("gpt-properties shard", (
            f"{shard}: {shard.examples} of the property's {shard.total} examples, seed hash(base {base}, "
            f"this test, {shard.index})\nrerun this shard: python -m pytest {shlex.quote(ordering.plain_id(item.nodeid))}"
            + (f" --subject {shlex.quote(spec)}" if spec else "")
            + f" --hypothesis-profile {profile} --shards {self.shards}{seed} -p no:cacheprovider\n"
            "(a failure replayed from the example database reruns without --hypothesis-seed; the "
            "@reproduce_failure line above reproduces either)")))
