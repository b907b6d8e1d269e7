"""The kill table behind the fail-fast run order (``properties/kills.json``), and what that order buys.

    python -m properties.mutation --no-fail-fast --jobs 16 --json nff.json      # every test x every mutant
    python -m properties.mutation.killpower nff.json [more.json ...] --write properties/kills.json

Reads kill matrices run with ``--no-fail-fast`` (each mutant's ``failures`` are all the tests that fail
on it), writes for each test (``ordering.key``) the mutants it kills, and prints the simulated time to
kill - start-up plus the measured costs (``costs.json``) of the tests run until the first killer - of
the cheapest-first order and of ``ordering.by_kill_power``, on the whole catalog (in sample) and cross-
validated: the order built from the kills of half the bug classes, timed on the mutants of the other
half, over ``--splits`` random halvings. The cross-validated figure is the one to expect for a bug that
is not in the catalog.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from properties import ordering
from properties.mutation import runner


def load(paths: list[str]) -> list[dict]:
    mutants: dict[str, dict] = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        if report.get("fail_fast", True):
            raise SystemExit(f"{path}: run with --fail-fast; its failures stop at the first killer, which "
                             f"says nothing about the other tests (run the matrix with --no-fail-fast)")
        for m in report["mutants"]:
            if m["status"] == "killed":
                mutants[m["name"]] = m
    return list(mutants.values())


def table(mutants: list[dict]) -> dict[str, frozenset]:
    kills: dict[str, set] = {}
    for m in mutants:
        for nodeid in m["failures"]:
            kills.setdefault(ordering.key(nodeid), set()).add(m["name"])
    return {k: frozenset(v) for k, v in kills.items()}


def selection() -> list[SimpleNamespace]:
    """The mutation run's items (its default tests and markers), as node ids from pytest's collection."""
    root = runner.PROJECT
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", runner.MARKERS, *runner.default_tests(root)], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    return [SimpleNamespace(nodeid=line) for line in out.splitlines() if "::" in line]


def time_to_kill(order: list, names: list[str], kills: dict, startup: float) -> list[float]:
    priced = [(ordering.cost(item), kills.get(ordering.key(item.nodeid), ())) for item in order]
    out = []
    for name in names:
        t = startup
        for seconds, killed in priced:
            t += seconds
            if name in killed:
                break
        else:
            t = float("inf")  # no test of the selection kills it
        out.append(t)
    return out


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):5.1f} s  max {max(times):5.1f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="kill-matrix JSON reports run with --no-fail-fast")
    p.add_argument("--write", metavar="PATH", help="write the kill table here (properties/kills.json)")
    p.add_argument("--startup", type=float, default=2.0,
                   help="seconds of a forked mutant run before its first test (measured: about 2 s)")
    p.add_argument("--splits", type=int, default=10, help="random halvings of the bug classes (default 10)")
    args = p.parse_args(argv)
    mutants = load(args.reports)
    kills = table(mutants)
    names = [m["name"] for m in mutants]
    items = selection()
    cheapest = sorted(items, key=ordering.cost)
    print(f"{len(mutants)} killed mutants, {len(kills)} killing tests, {len(items)} items in the selection")
    print(f"in sample     cheapest first: {summary(time_to_kill(cheapest, names, kills, args.startup))}")
    print(f"in sample     kill power:     "
          f"{summary(time_to_kill(ordering.by_kill_power(items, kills), names, kills, args.startup))}")
    classes = sorted({m["bug_class"] for m in mutants})
    held_out = {"cheapest first": [], "kill power": []}
    for seed in range(args.splits):
        random.Random(seed).shuffle(classes)
        half = set(classes[: len(classes) // 2])
        a = [m for m in mutants if m["bug_class"] in half]
        b = [m for m in mutants if m["bug_class"] not in half]
        for train, test in ((a, b), (b, a)):
            test_names = [m["name"] for m in test]
            held_out["cheapest first"] += time_to_kill(cheapest, test_names, kills, args.startup)
            held_out["kill power"] += time_to_kill(ordering.by_kill_power(items, table(train)), test_names, kills,
                                                   args.startup)
    for label, times in held_out.items():
        print(f"held-out half {label + ':':<16}{summary(times)}  ({args.splits} splits of {len(classes)} bug classes)")
    if args.write:
        body = {"command": "python -m properties.mutation.killpower " + " ".join(args.reports),
                "mutants": len(mutants), "kills": {k: sorted(v) for k, v in sorted(kills.items())}}
        Path(args.write).write_text(json.dumps(body, indent=0) + "\n")
        print(f"wrote the kills of {len(kills)} tests to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
