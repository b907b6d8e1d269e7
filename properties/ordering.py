"""The order the suite runs its items in, from their measured cost (``properties/costs.json``).

Two orders, for two goals:

* cheapest first (a single process, or ``-x``/``--maxfail``): a broken model stops at the first failing
  property, and the cheap properties (shapes, parameter counts, gradient flow) catch most bugs, so the
  time to the first failure is seconds; the mutation runner's time to kill is this time;
* longest first (xdist without ``--maxfail``): the greedy longest-processing-time schedule, so no worker is
  left with a long item at the end while the others idle; the wall time is then close to work / workers.

``costs.json`` maps node ids (shard suffixes and directories removed, ``key``) to seconds (setup + call + teardown) measured on the
``gpt`` subject under the ``ci`` profile in one process, `slow` items included, written by ``python -m
properties.speed --write-costs properties/costs.json``. An item it does not know (a new property, a user's
parametrization) costs the median, so it runs among the ordinary ones, or the maximum if marked `slow`. A shard costs its share of the property's examples.
Every xdist worker reads the same file and sorts the same collection, so their orders agree, as xdist needs.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Optional

COSTS = Path(__file__).with_name("costs.json")
_SHARD = re.compile(r"-?shard\d+of\d+")
_costs: Optional[dict] = None
_fallback: Optional[tuple] = None  # (median, maximum) of the table: the cost of an unmeasured item


def costs() -> dict:
    global _costs
    if _costs is None:
        try:
            _costs = json.loads(COSTS.read_text())["seconds"]
        except (OSError, ValueError, KeyError):
            _costs = {}
    return _costs


def base_id(nodeid: str) -> str:
    """The node id without its shard: ``t.py::f[shard3of16]`` -> ``t.py::f``, ``f[a-shard1of4]`` -> ``f[a]``."""
    return _SHARD.sub("", nodeid).replace("[]", "")


def key(nodeid: str) -> str:
    """``base_id`` without the file's directory: a checkout's ids (``properties/t.py::f``) and an installed
    suite's (``t.py::f``, relative to site-packages/properties) name the same item."""
    path, sep, rest = base_id(nodeid).partition("::")
    return path.rpartition("/")[2] + sep + rest


def seconds(nodeid: str, slow: bool = False) -> float:
    """The measured cost of the item; unmeasured: the median, or the maximum for a `slow`-marked item."""
    global _fallback
    known = costs()
    if _fallback is None:
        _fallback = (statistics.median(known.values()), max(known.values())) if known else (0.0, 0.0)
    measured = known.get(key(nodeid))
    return measured if measured is not None else _fallback[1 if slow else 0]


def cost(item) -> float:
    slow = hasattr(item, "get_closest_marker") and item.get_closest_marker("slow") is not None
    callspec = getattr(item, "callspec", None)
    shard = callspec.params.get("shard") if callspec is not None else None
    share = shard.examples / shard.total if shard is not None and getattr(shard, "total", 0) else 1.0
    return seconds(item.nodeid, slow) * share


def order(items: list, longest_first: bool) -> None:
    """Sort ``items`` in place by measured cost (stable: ties keep the collection order)."""
    items.sort(key=cost, reverse=longest_first)


def dispatch_one_at_a_time(config) -> None:
    """Under longest first, make xdist hand out items one at a time, in the collection order.

    xdist's ``load`` scheduler starts each worker with a *consecutive* chunk of a quarter of its share
    (so that module fixtures are set up once): sorted longest first, worker 0 got the 32 longest items of
    the nightly suite and the others short ones, and on 16 workers the mean worker then idled 52 s of a
    156 s run waiting for worker 0 (measured with ``properties.timeline``). ``--maxschedchunk 1`` makes
    the first chunk 2 items and every refill 1-2 items, which is the greedy longest-processing-time
    schedule. A ``--maxschedchunk`` the user gave is kept.
    """
    if longest_first(config) and getattr(config.option, "maxschedchunk", "absent") is None:
        config.option.maxschedchunk = 1


def longest_first(config) -> bool:
    """xdist's controller hands items out as workers ask: balance them, unless a failure should stop the run."""
    distributed = getattr(config.option, "numprocesses", None) not in (None, 0) or hasattr(config, "workerinput")
    return distributed and not config.getoption("maxfail", 0)
