"""The order the suite runs its items in, from their measured cost (``properties/costs.json``) and
kill power (``properties/kills.json``).

Two orders, for two goals:

* most kills per second first (a single process, or ``-x``/``--maxfail``): a broken model stops at the
  first failing property, so the time to the first failure is the time to reach a property that fails;
  the mutation runner's time to kill is this time. ``kills.json`` lists, per item, the catalogued mutants
  it kills (from a ``--no-fail-fast`` kill matrix, ``python -m properties.mutation.killpower``). The order
  is the greedy one for min-sum set cover: next, the item with the most not-yet-killed mutants per second
  (a 4-approximation of the least mean time to kill over the catalog). Each item also gets ``PRIOR``
  kills, so that a cheap property that killed nothing catalogued still runs before a dear one: a user's
  bug need not be in the catalog. Measured (``python -m properties.mutation.killpower``, which prints it):
  on the catalog, median time to kill 4.1 -> 2.7 s simulated, 7.9 -> 3.5 s in a real run; on bug classes
  held out of the table (order from half the classes, timed on the other half), about the same as
  cheapest first (4.2-4.4 s vs 4.1 s for PRIOR 0.3-3; 0.3 keeps the catalog's maximum lowest). Items
  without kills run cheapest first;
* longest first (xdist without ``--maxfail``): the greedy longest-processing-time schedule, so no worker is
  left with a long item at the end while the others idle; the wall time is then close to work / workers.

``costs.json`` maps node ids (shard suffixes, loadgroup suffixes and directories removed, ``key``) to
seconds (setup + call + teardown) measured on the ``gpt`` subject under the ``ci`` profile in one process,
`slow` items included, and the max_examples each Hypothesis test ran with; written by ``python -m
properties.speed --write-costs properties/costs.json``. A Hypothesis item costs its measured seconds times
the examples it runs now over those (a shard its share, nightly 20x). An item the table does not know (a
new property, a user's parametrization) costs the median, so it runs among the ordinary ones, or the
maximum if marked `slow`. Every xdist worker reads the same files and sorts the same collection, so their
orders agree, as xdist needs.
"""
from __future__ import annotations

import heapq
import json
import re
import statistics
from pathlib import Path
from typing import Optional

COSTS = Path(__file__).with_name("costs.json")
KILLS = Path(__file__).with_name("kills.json")
LOADGROUP_KEY = "gpt_properties_loadgroup"  # workerinput: the controller switched xdist to loadgroup
PRIOR = 0.3  # kills credited to every item (see the module docstring)
FLOOR = 0.01  # s: an item costs at least pytest's own per-item overhead, whatever the table says
_SHARD = re.compile(r"-?shard\d+of\d+")
_table: Optional[dict] = None
_kills: Optional[dict] = None
_fallback: Optional[tuple] = None  # (median, maximum) of the table: the cost of an unmeasured item


def costs_table() -> dict:
    """costs.json: {"seconds": {key: s}, "max_examples": {key: n}} (empty if missing or unreadable)."""
    global _table
    if _table is None:
        try:
            _table = json.loads(COSTS.read_text())
        except (OSError, ValueError):
            _table = {}
    return _table


def costs() -> dict:
    return costs_table().get("seconds", {})


def kills() -> dict:
    """``key`` -> frozenset of the catalogued mutants the item kills."""
    global _kills
    if _kills is None:
        try:
            _kills = {k: frozenset(v) for k, v in json.loads(KILLS.read_text())["kills"].items()}
        except (OSError, ValueError, KeyError):
            _kills = {}
    return _kills


def plain_id(nodeid: str) -> str:
    """The node id without the ``@group`` suffix xdist's ``loadgroup`` adds to ``xdist_group`` items (its own
    rule: an ``@`` after the last ``]``): the id pytest selects by, and seeds and costs are keyed by."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") else nodeid


def base_id(nodeid: str) -> str:
    """The node id without its shard: ``t.py::f[shard3of16]`` -> ``t.py::f``, ``f[a-shard1of4]`` -> ``f[a]``."""
    return _SHARD.sub("", plain_id(nodeid)).replace("[]", "")


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


def max_examples(item) -> Optional[int]:
    """The max_examples a Hypothesis test item runs with (None for other items)."""
    settings = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
    return getattr(settings, "max_examples", None)


def cost(item) -> float:
    """Measured seconds, scaled for a Hypothesis item by the examples it runs now over those it ran when
    measured (a shard runs its share; the nightly profile 20x ci's), so that under nightly a property's
    shards and the fixed-cost items (DDP, FSDP) are compared in the same currency."""
    slow = hasattr(item, "get_closest_marker") and item.get_closest_marker("slow") is not None
    callspec = getattr(item, "callspec", None)
    shard = callspec.params.get("shard") if callspec is not None else None
    measured = costs_table().get("max_examples", {}).get(key(item.nodeid))
    now = shard.examples if shard is not None else max_examples(item)
    if measured and now:
        scale = now / measured
    else:  # not measured as a Hypothesis test: a shard still costs its share
        scale = shard.examples / shard.total if shard is not None and getattr(shard, "total", 0) else 1.0
    return seconds(item.nodeid, slow) * scale


def order(items: list, longest_first: bool) -> None:
    """Sort ``items`` in place: longest first, or by kill power (stable: ties keep the collection order)."""
    if longest_first:
        items.sort(key=cost, reverse=True)
    else:
        items[:] = by_kill_power(items)


def by_kill_power(items: list, table: Optional[dict] = None) -> list:
    """Greedy: repeatedly the item with the most (not yet killed mutants + PRIOR) per second of cost.

    Lazy greedy: an item's rate only falls as mutants get killed, so a popped rate that is still the
    largest after recomputing is the true maximum.
    """
    table = kills() if table is None else table
    priced = sorted(((cost(item), i, item) for i, item in enumerate(items)), key=lambda c: c[:2])
    pending = [item for _, _, item in priced]  # ties: cheapest first, then the collection order
    killed = [table.get(key(item.nodeid), frozenset()) for item in pending]
    seconds_ = [max(c, FLOOR) for c, _, _ in priced]
    alive = set().union(*killed)

    def rate(j: int) -> float:
        return (len(killed[j] & alive) + PRIOR) / seconds_[j]

    heap = [(-rate(j), j) for j in range(len(pending))]
    heapq.heapify(heap)
    chosen = []
    while heap:
        stored, j = heapq.heappop(heap)
        now = rate(j)
        if now < -stored and heap and now < -heap[0][0]:
            heapq.heappush(heap, (-now, j))  # stale: earlier items killed some of its mutants
            continue
        chosen.append(pending[j])
        alive -= killed[j]
    return chosen


def balance_xdist(config) -> None:
    """Under longest first, make xdist hand out items one at a time, in the collection order, and keep the
    ``xdist_group`` items (the distributed properties) on one worker.

    xdist's ``load`` scheduler starts each worker with a *consecutive* chunk of a quarter of its share
    (so that module fixtures are set up once): sorted longest first, worker 0 got the 32 longest items of
    the nightly suite and the others short ones, and on 16 workers the mean worker then idled 52 s of a
    156 s run waiting for worker 0 (measured with ``properties.timeline``). ``loadgroup`` sends a group
    as one unit, first (the largest), and every other item as its own unit, refilling a worker when it has
    2 or fewer left: the greedy longest-processing-time schedule. The DDP/FSDP/TP properties share a pool
    of rank processes that takes ~11 s to start on the 16-core host (they import torch): spread over 16
    workers, that was 16 starts, ~170 s of a 1133 s nightly run. A ``--dist`` the user gave is kept
    (under ``load``, with one item per refill: ``--maxschedchunk 1`` unless given).
    """
    if hasattr(config, "workerinput"):  # a worker parses the command line itself: told by the controller
        if config.workerinput.get(LOADGROUP_KEY):
            config.option.loadgroup = True  # xdist then suffixes xdist_group items' ids, as loadgroup needs
        return
    if not longest_first(config):
        return
    chosen = any(a == "-d" or a.startswith("--dist") for a in config.invocation_params.args)
    if not chosen and getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"
    if getattr(config.option, "maxschedchunk", "absent") is None:
        config.option.maxschedchunk = 1


def longest_first(config) -> bool:
    """xdist's controller hands items out as workers ask: balance them, unless a failure should stop the run."""
    distributed = getattr(config.option, "numprocesses", None) not in (None, 0) or hasattr(config, "workerinput")
    return distributed and not config.getoption("maxfail", 0)
