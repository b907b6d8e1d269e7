"""Where a parallel run's wall time goes: each worker's start-up, busy time, gaps between items and idle tail.

``python -m properties.speed --scaling`` loads this plugin (``-p properties.timeline``) in the pytest run it
times, with ``$GPT_PROPERTIES_TIMELINE`` naming a JSON file. The controller (the process without
``workerinput``; the only process under ``-n 0``) records every phase report's worker and its start and
stop (epoch seconds, taken by pytest in the worker), and writes them when the session ends. ``split``
then decomposes the wall time of each worker, from the launch of the run to the last report:

    wall = start-up (launch -> its first item) + busy (its items' phases) + gaps (between its items:
           waiting for the controller, collection of a late module) + tail (its last item -> the run's last)

so an xdist run that does not scale says which of the four grew. Each worker also records its own start-up
milestones (``WorkerMarks``, handed to the controller in xdist's workeroutput), which ``split`` turns into
the phases of the start-up: spawn (launch -> the worker's process exists), boot (-> pytest starts configuring
its plugins), configure (-> its session starts: every plugin configured, the torch import), collect (-> its
items collected) and wait (-> its first item: every worker's collection must reach the controller before any
item is sent).
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
        self.marks["session"] = time.time()  # before the subject's check (plugin.py's sessionstart wrapper)

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
        worker = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if worker:
            self.marks.setdefault("workers", {})[node.gateway.id] = worker

    def pytest_sessionfinish(self) -> None:
        self.marks["finish"] = time.time()
        with open(self.path, "w") as f:
            json.dump({"rows": self.rows, "marks": self.marks}, f)


class WorkerMarks:
    """In an xdist worker: epoch seconds of its start-up milestones, sent to the controller when it stops."""

    def __init__(self, config) -> None:
        self.config = config
        self.marks = {"process": _process_start(), "boot": time.time()}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self) -> None:
        self.marks["configured"] = time.time()  # every plugin's pytest_configure has run

    def pytest_collection_finish(self) -> None:
        self.marks["collected"] = time.time()
        self.config.workeroutput[WORKER_KEY] = self.marks


def _process_start() -> float | None:
    """This process's start (epoch s), where /proc says when it started: its age on the boot clock
    subtracted from now (not /proc/stat's btime, whole seconds that drift from the wall clock)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


WORKER_KEY = "gpt_properties_timeline"
PHASES = ("spawn", "boot", "configure", "collect", "wait")  # a worker's start-up, in order


@pytest.hookimpl(tryfirst=True)  # a worker's "boot" mark before the other plugins configure (torch)
def pytest_configure(config) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerMarks(config), "gpt-properties-timeline-worker")
    else:
        config.pluginmanager.register(Recorder(path), "gpt-properties-timeline")


def worker_phases(marks: dict, launch: float, first_items: dict) -> dict:
    """Mean seconds of each start-up phase (PHASES) over the workers that sent their milestones."""
    phases: dict[str, list] = {name: [] for name in PHASES}
    for worker, m in marks.get("workers", {}).items():
        if worker not in first_items or m.get("process") is None:
            continue
        points = [launch, m["process"], m["boot"], m["configured"], m["collected"], first_items[worker]]
        for name, a, b in zip(PHASES, points, points[1:]):
            phases[name].append(b - a)
    return {name: statistics.fmean(v) for name, v in phases.items() if v}


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
    firsts = {worker: min(s for s, _ in spans) for worker, spans in workers.items()}
    parts = {"startup": [], "busy": [], "gaps": [], "tail": []}
    for worker, spans in workers.items():
        first, last = firsts[worker], max(e for _, e in spans)
        busy = sum(e - s for s, e in spans)
        parts["startup"].append(first - launch)
        parts["busy"].append(busy)
        parts["gaps"].append(last - first - busy)
        parts["tail"].append(end - last)
    out = {name: statistics.fmean(values) for name, values in parts.items()}
    out["first_start_max"] = max(parts["startup"])
    marks = trace.get("marks", {})
    out["startup_phases"] = worker_phases(marks, launch, firsts)
    out["marks"] = {k: [round(t - launch, 2) for t in v] if isinstance(v, list) else round(v - launch, 2)
                    for k, v in marks.items() if k != "workers"}
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
