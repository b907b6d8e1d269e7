"""Where a parallel run's wall time goes: each worker's start-up, busy time, gaps between items and idle tail.

``python -m properties.speed --scaling`` loads this plugin (``-p properties.timeline``) in the pytest run it
times, with ``$GPT_PROPERTIES_TIMELINE`` naming a JSON file. The controller (the process without
``workerinput``; the only process under ``-n 0``) records every phase report's worker and its start and
stop (epoch seconds, taken by pytest in the worker), and writes them when the session ends. ``split``
then decomposes the wall time of each worker, from the launch of the run to the last report:

    wall = start-up (launch -> its first item) + busy (its items' phases) + gaps (between its items:
           waiting for the controller, collection of a late module) + tail (its last item -> the run's last)

so an xdist run that does not scale says which of the four grew.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import pytest

ENV = "GPT_PROPERTIES_TIMELINE"


class Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: list = []
        self.marks: dict = {"configured": time.time()}  # start-up milestones of the controller, epoch s

    def pytest_sessionstart(self) -> None:
        self.marks["session"] = time.time()  # after the subject's check

    def pytest_collection_finish(self) -> None:
        self.marks["collected"] = time.time()  # the controller's own collection (none under xdist)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        self.marks.setdefault("workers_collected", []).append(time.time())

    def pytest_runtest_logreport(self, report) -> None:
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        self.rows.append([getattr(gateway, "id", "main"), report.nodeid, report.when, report.start, report.stop,
                          report.outcome])

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        self.marks.setdefault("workers_down", []).append(time.time())

    def pytest_sessionfinish(self) -> None:
        self.marks["finish"] = time.time()
        with open(self.path, "w") as f:
            json.dump({"rows": self.rows, "marks": self.marks}, f)


def pytest_configure(config) -> None:
    path = os.environ.get(ENV)
    if path and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Recorder(path), "gpt-properties-timeline")


def split(trace: dict, launch: float) -> dict:
    """Mean over workers of start-up, busy, gaps and tail (seconds), the controller's start-up milestones
    (seconds after launch), the last four items of each worker, per-item busy seconds (setup + call +
    teardown) and the items that failed or errored."""
    rows, workers = trace["rows"], {}
    for worker, _, _, start, stop, _ in rows:
        workers.setdefault(worker, []).append((start, stop))
    if not workers:
        return {}
    end = max(stop for spans in workers.values() for _, stop in spans)
    parts = {"startup": [], "busy": [], "gaps": [], "tail": []}
    for spans in workers.values():
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        busy = sum(e - s for s, e in spans)
        parts["startup"].append(first - launch)
        parts["busy"].append(busy)
        parts["gaps"].append(last - first - busy)
        parts["tail"].append(end - last)
    out = {name: statistics.fmean(values) for name, values in parts.items()}
    out["first_start_max"] = max(parts["startup"])
    marks = trace.get("marks", {})
    out["marks"] = {k: [round(t - launch, 2) for t in v] if isinstance(v, list) else round(v - launch, 2)
                    for k, v in marks.items()}
    last: dict[str, list] = {}
    for worker, nodeid, when, start, stop, _ in sorted(rows, key=lambda r: r[3]):
        if when == "call":
            last.setdefault(worker, []).append([nodeid, round(start - launch, 1), round(stop - start, 2)])
    out["last_items"] = {w: v[-4:] for w, v in last.items()}
    items: dict[str, float] = {}
    for _, nodeid, _, start, stop, _ in rows:
        items[nodeid] = items.get(nodeid, 0.0) + stop - start
    out["items"] = items
    out["failed"] = list(dict.fromkeys(nodeid for _, nodeid, _, _, _, outcome in rows if outcome == "failed"))
    return out
