"""The order the suite runs its items in, from their measured cost (``properties/costs.json``).

Two orders, for two goals:

* cheapest first (a single process, or ``-x``/``--maxfail``): a broken model stops at the first failing
  property, and the cheap properties (shapes, parameter counts, gradient flow) catch most bugs, so the
  time to the first failure is seconds; the mutation runner's time to kill is this time;
* longest first (xdist without ``--maxfail``): the greedy longest-processing-time schedule, so no worker is
  left with a long item at the end while the others idle; the wall time is then close to work / workers.

``costs.json`` maps node ids (shard suffixes removed) to seconds (setup + call + teardown) measured on the
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


def cost(item, known: dict, default: float) -> float:
    seconds = known.get(base_id(item.nodeid))
    if seconds is None:  # unmeasured: a `slow`-marked item is assumed as dear as the dearest measured one
        slow = hasattr(item, "get_closest_marker") and item.get_closest_marker("slow") is not None
        seconds = max(known.values(), default=default) if slow else default
    callspec = getattr(item, "callspec", None)
    shard = callspec.params.get("shard") if callspec is not None else None
    if shard is not None and hasattr(shard, "examples") and shard.total:
        seconds *= shard.examples / shard.total
    return seconds


def order(items: list, longest_first: bool) -> None:
    """Sort ``items`` in place by measured cost (stable: ties keep the collection order)."""
    known = costs()
    default = statistics.median(known.values()) if known else 0.0
    items.sort(key=lambda item: cost(item, known, default), reverse=longest_first)


def longest_first(config) -> bool:
    """xdist's controller hands items out as workers ask: balance them, unless a failure should stop the run."""
    distributed = getattr(config.option, "numprocesses", None) not in (None, 0) or hasattr(config, "workerinput")
    return distributed and not config.getoption("maxfail", 0)
