"""Shard each Hypothesis property into K independent items, so that one property's examples spread over
xdist workers.

``--shards K`` (default: 16 under the ``nightly`` profile, 1 otherwise, so ``ci`` node ids never change;
``$GPT_PROPERTIES_SHARDS`` overrides) parametrizes every ``@given`` test with ``shard`` 0..K-1, node ids
``test_x[...-shard3of16]``. Shard s runs ceil(max_examples / K) examples from its own seed,
hash(base seed, the test's node id without the shard, s), so the K shards draw independent examples and
together run the profile's budget. The base seed is ``--hypothesis-seed`` when given, else drawn once per
session in the controller, handed to every xdist worker, and printed in the header: rerunning a failing
shard's node id with ``--hypothesis-seed <base>`` and the same ``--shards`` draws the same examples. The
example database is shared by all shards (one key per test), so a failure saved by any shard is replayed
first by every shard of the next run; the printed ``@reproduce_failure`` blob works as without shards.
Derandomised profiles (``ci``) ignore seeds, so sharding them would only repeat the same examples: K = 1.
"""
from __future__ import annotations

import hashlib
import math
import os
import random

import pytest
from hypothesis import settings

SEED_KEY = "gpt_properties_shard_seed"


def shard_count(config) -> int:
    value = config.getoption("--shards")
    if value is None:
        value = os.environ.get("GPT_PROPERTIES_SHARDS")
    if value is None:  # --hypothesis-profile is read directly: Hypothesis may load it after this plugin
        profile = config.getoption("hypothesis_profile", None) or settings.get_current_profile_name()
        return 16 if profile == "nightly" else 1
    shards = int(value)
    if shards < 1:
        raise pytest.UsageError(f"--shards must be >= 1, got {shards}")
    return shards


def _base_seed(config) -> int:
    if hasattr(config, "workerinput") and SEED_KEY in config.workerinput:
        return config.workerinput[SEED_KEY]
    forced = config.getoption("hypothesis_seed", None)
    if forced is not None:
        return int(forced)
    if not hasattr(config, "_gpt_properties_seed"):
        config._gpt_properties_seed = random.SystemRandom().randrange(2**32)
    return config._gpt_properties_seed


def shard_seed(base: int, nodeid: str, shard: int) -> int:
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
            return (f"gpt-properties: each Hypothesis property in {self.shards} shards, base seed "
                    f"{_base_seed(config)} (rerun one with --hypothesis-seed {_base_seed(config)} "
                    f"--shards {self.shards})")

    def pytest_generate_tests(self, metafunc):
        if self.shards > 1 and hasattr(metafunc.function, "hypothesis"):
            metafunc.fixturenames.append("shard")  # a pseudo-argument: the test body never receives it
            metafunc.parametrize("shard", range(self.shards), ids=lambda s: f"shard{s}of{self.shards}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        callspec = getattr(item, "callspec", None)
        if self.shards == 1 or callspec is None or "shard" not in callspec.params:
            yield
            return
        shard = callspec.params["shard"]
        test = item.obj  # the @given wrapper: Hypothesis reads these two attributes on every call
        saved = test._hypothesis_internal_use_settings, test._hypothesis_internal_use_seed
        base_id = item.nodeid.replace(f"shard{shard}of{self.shards}", "shard")
        test._hypothesis_internal_use_settings = settings(
            saved[0], max_examples=math.ceil(saved[0].max_examples / self.shards))
        test._hypothesis_internal_use_seed = shard_seed(_base_seed(item.config), base_id, shard)
        try:
            yield
        finally:
            test._hypothesis_internal_use_settings, test._hypothesis_internal_use_seed = saved
