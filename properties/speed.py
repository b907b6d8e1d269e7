"""Suite speed benchmark: wall time and Hypothesis examples per second for every property.

    python -m properties.speed                      # current profile (dev; ci under CI=true)
    python -m properties.speed --hypothesis-profile ci --sharded --json speed.json
    python -m properties.speed --scaling 1,2,4,8,16 --hypothesis-profile nightly   # the scaling table

Runs the CPU suite in one process (so per-property times are not mixed across workers), counting the
examples each property executes, and prints a table sorted by wall time. ``--sharded`` also times the
whole suite as users run it, ``python -m pytest -n auto``. ``--scaling 1,2,4`` instead runs the suite
once per worker count (``-n W``, the same Hypothesis seed each time, properties sharded under ``nightly``
by properties/sharding.py; after one untimed ``--collect-only`` that compiles the bytecode) and prints wall
time, speedup over the first count, parallel efficiency, the summed item time (work), the wall time more
workers cannot remove (fixed = wall - work / workers) and the largest single item's share of the work, and
below each row where the wall time went per worker (start-up and its phases, busy, gaps between items, idle
tail; all from properties/timeline.py's record of the run). Extra arguments go to pytest (test paths, ``--shards 1`` to compare with unsharded properties).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest

from properties import ordering


class ExampleCounter:
    """pytest plugin: wraps each Hypothesis test's inner test (the documented hook for wrapping) to count
    executed examples, and times every test call."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.phases: dict[str, float] = {}  # node id -> setup + call + teardown seconds
        self.max_examples: dict[str, int] = {}  # node id -> max_examples of a Hypothesis test, as it ran

    def pytest_runtest_logreport(self, report):
        self.phases[report.nodeid] = self.phases.get(report.nodeid, 0.0) + report.duration

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        row = self.rows.setdefault(item.nodeid, {"examples": 0, "seconds": 0.0, "outcome": "passed"})
        hyp = getattr(item.obj, "hypothesis", None)
        if hyp is not None:
            inner = hyp.inner_test

            def counted(*args, **kwargs):
                row["examples"] += 1
                return inner(*args, **kwargs)

            hyp.inner_test = counted
            self.max_examples[item.nodeid] = ordering.max_examples(item)
        start = time.perf_counter()
        outcome = yield
        row["seconds"] += time.perf_counter() - start
        if hyp is not None:
            hyp.inner_test = inner
        else:
            row["examples"] = 1
        if outcome.excinfo is not None:
            row["outcome"] = outcome.excinfo[0].__name__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the table as JSON here")
    parser.add_argument("--sharded", action="store_true", help="also time `python -m pytest -n auto`")
    parser.add_argument("--scaling", metavar="W1,W2,...", help="time the suite at these xdist worker counts")
    parser.add_argument("--write-costs", metavar="PATH",
                        help="write every item's measured seconds here (properties/costs.json: the run order)")
    args, pytest_args = parser.parse_known_args(argv)
    if args.scaling:
        result = scaling([int(w) for w in args.scaling.split(",")], pytest_args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return 0 if all(r["returncode"] == 0 for r in result["rows"]) else 1
    counter = ExampleCounter()
    start = time.perf_counter()
    # the cost table must know the slow items too: the default run includes them
    markers = "not gpu" if args.write_costs else "not gpu and not slow"
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-m", markers, *pytest_args], plugins=[counter])
    serial = time.perf_counter() - start
    rows = sorted(counter.rows.items(), key=lambda kv: -kv[1]["seconds"])
    print(f"\n{'property':<90} {'examples':>8} {'wall s':>8} {'ex/s':>8}")
    for nodeid, r in rows:
        rate = r["examples"] / r["seconds"] if r["seconds"] else float("inf")
        print(f"{nodeid:<90} {r['examples']:>8} {r['seconds']:>8.2f} {rate:>8.1f}")
    total_ex = sum(r["examples"] for r in counter.rows.values())
    print(f"{'total (one process)':<90} {total_ex:>8} {serial:>8.2f} {total_ex / serial:>8.1f}")
    result = {"serial_seconds": serial, "examples": total_ex, "tests": dict(rows)}
    if args.write_costs:
        write_costs(args.write_costs, counter.phases, counter.max_examples, pytest_args)
    if args.sharded:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-n", "auto", "-q", "-p", "no:cacheprovider", *pytest_args],
                       check=False, stdout=subprocess.DEVNULL)
        result["sharded_seconds"] = time.perf_counter() - start
        print(f"python -m pytest -n auto: {result['sharded_seconds']:.1f} s wall")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return int(code)


def write_costs(path: str, phases: dict, max_examples: dict, pytest_args: list[str]) -> None:
    """The cost table properties/ordering.py sorts by: seconds per ordering.key (shards summed), and the
    max_examples each Hypothesis test ran with (its cost scales with it under another profile)."""
    import os
    import platform

    seconds: dict[str, float] = {}
    for nodeid, s in phases.items():
        seconds[ordering.key(nodeid)] = seconds.get(ordering.key(nodeid), 0.0) + s
    table = {"command": " ".join(["python -m properties.speed --write-costs", path, *pytest_args]),
             "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
             "seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
             "max_examples": {ordering.key(n): m for n, m in sorted(max_examples.items()) if m}}
    with open(path, "w") as f:
        json.dump(table, f, indent=0)
        f.write("\n")
    print(f"wrote {len(seconds)} item costs to {path}")


def scaling(workers: list[int], pytest_args: list[str]) -> dict:
    """Run the CPU suite at each worker count; one row per count (wall, speedup, efficiency, largest item)."""
    import os
    import tempfile

    from properties import timeline

    if not any(a.startswith("--hypothesis-seed") for a in pytest_args):
        pytest_args = [*pytest_args, "--hypothesis-seed", "1"]  # the same examples at every count
    warm = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *pytest_args]
    start = time.perf_counter()
    # every count then starts from compiled, assertion-rewritten bytecode (what a user's second run finds),
    # not the first one alone from a fresh checkout's sources
    subprocess.run(warm, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"warm-up (pytest --collect-only, not timed below): {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    # work: the summed item times; fixed: wall - work / workers, what more workers do not shrink (interpreter
    # and torch start-up, collection, scheduling, the last items' tail)
    print(f"{'workers':>7} {'wall s':>8} {'speedup':>8} {'efficiency':>10} {'items':>6} {'work s':>8} {'fixed s':>8} "
          f"{'largest item s':>15} {'share':>6}  largest item", flush=True)
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            trace = os.path.join(tmp, "timeline.json")
            cmd = [sys.executable, "-m", "pytest", "-n", str(w) if w > 1 else "0", "-q", "-p", "no:cacheprovider",
                   "-p", "properties.timeline", "-m", "not gpu and not slow", *pytest_args]
            launch, start = time.time(), time.perf_counter()
            proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, timeline.ENV: trace})
            wall = time.perf_counter() - start
            spans = timeline.split(json.load(open(trace)), launch) if os.path.exists(trace) else {}
        cases = list(spans.get("items", {}).items()) or [("", 0.0)]
        failed = spans.get("failed", [])
        name, largest = max(cases, key=lambda c: c[1])
        total = sum(t for _, t in cases) or 1.0
        row = dict(workers=w, wall_s=wall, items=len(cases), item_seconds=total, largest_item=name,
                   largest_item_s=largest, returncode=proc.returncode, failed=failed, timeline=spans)
        rows.append(row)
        speedup = rows[0]["wall_s"] / wall
        print(f"{w:>7} {wall:>8.1f} {speedup:>7.2f}x {speedup * rows[0]['workers'] / w:>10.2f} {len(cases):>6} "
              f"{total:>8.1f} {wall - total / w:>8.1f} {largest:>15.1f} {largest / total:>6.1%}  {name}"
              f"{'' if proc.returncode == 0 else f'  (FAILED run, exit {proc.returncode})'}", flush=True)
        if spans:
            print(f"{'':>7} per worker, mean s: start-up {spans['startup']:.1f} (last {spans['first_start_max']:.1f}), "
                  f"busy {spans['busy']:.1f}, gaps {spans['gaps']:.1f}, tail {spans['tail']:.1f}; "
                  f"shutdown {wall - spans['startup'] - spans['busy'] - spans['gaps'] - spans['tail']:.1f}; "
                  f"controller after launch: {spans['marks']}", flush=True)
            if spans.get("startup_phases"):
                print(f"{'':>7} start-up per worker, mean s: " + ", ".join(
                    f"{name} {s:.1f}" for name, s in spans["startup_phases"].items()), flush=True)
        for nodeid in failed:  # a failed run's times are not the suite's: say which items failed
            print(f"{'':>7} failed: {nodeid}", flush=True)
    return {"command": " ".join(["python -m properties.speed --scaling", ",".join(map(str, workers)), *pytest_args]),
            "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
