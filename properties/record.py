"""The per-test record behind ``gpt-properties check``: what each test states, needs, ran and, when it
failed, how to rebuild the failing example.

Workers attach it to pytest's own reports as ``user_properties`` (which xdist ships to the controller and
junit writes as <property> elements); the controller's Recorder collects the reports through
pytest_runtest_logreport and writes one JSON file at the end of the session.
"""
from __future__ import annotations

import json
import re
import sys
import time

import pytest

STATS_KEY = pytest.StashKey[dict]()
DESELECTED_KEY = pytest.StashKey[str]()
_BLOB = re.compile(r"@reproduce_failure\(.*\)")


def invariant(item) -> str:
    """The first paragraph of the test's docstring, on one line: its invariant in words."""
    doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def examples(stats: dict) -> dict:
    """Test cases Hypothesis ran, by status, over all phases (from hypothesis.statistics' dict)."""
    counts = {"passed": 0, "failed": 0, "invalid": 0}
    names = {"valid": "passed", "interesting": "failed", "invalid": "invalid"}
    for key, phase in stats.items():
        if key.endswith("-phase") and isinstance(phase, dict):
            for case in phase.get("test-cases", []):
                if case.get("status") in names:
                    counts[names[case["status"]]] += 1
    return counts


def annotate(item, call, report) -> None:
    """Add the record to ``report.user_properties`` (setup: the static facts; call: what ran)."""
    props = dict(report.user_properties)
    if report.when == "setup":
        needs = list(dict.fromkeys(c for m in item.iter_markers("needs") for c in m.args))
        report.user_properties += [
            ("property", f"{item.module.__name__}::{item.name}" if getattr(item, "module", None) else item.nodeid),
            ("test_name", item.name),
            ("invariant", invariant(item)),
            ("needs", ",".join(needs)),
        ]
    elif report.when == "call":
        stats = item.stash.get(STATS_KEY, None)
        if stats:
            report.user_properties.append(("examples", json.dumps(examples(stats))))
        if report.failed and "rebuild" not in props:
            from properties import harness

            last = harness.last_build()
            if last:
                report.user_properties.append(("rebuild", last))
            blob = _BLOB.search(report.longreprtext or "")
            if blob:
                report.user_properties.append(("reproduce_failure", blob.group(0)))


def skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def first_failure_line(report) -> str:
    """The assertion message's first line (pytest's crash line), not the traceback."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ""
    return (report.longreprtext or "").strip().splitlines()[-1:][0] if report.longreprtext else ""


class Recorder:
    """Controller-side: one entry per test, written as JSON to --gpt-properties-json at the end."""

    def __init__(self, config) -> None:
        self.config, self.path = config, config.getoption("--gpt-properties-json")
        self.tests: dict = {}
        self.collected: list = []
        self.started = time.time()

    def _entry(self, nodeid):
        return self.tests.setdefault(nodeid, {"nodeid": nodeid, "outcome": "passed", "duration": 0.0,
                                              "reason": "", "details": ""})

    def pytest_runtest_logreport(self, report):
        entry = self._entry(report.nodeid)
        for key, value in report.user_properties:
            entry[key] = json.loads(value) if key == "examples" else value
        entry["duration"] += report.duration
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["reason"] = first_failure_line(report)
            entry["details"] = report.longreprtext
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"], entry["reason"] = "skipped", skip_reason(report)

    def pytest_collectreport(self, report):
        if report.failed:  # a module that cannot be imported is an error of the run, not a silent gap
            entry = self._entry(report.nodeid)
            entry.update(outcome="error", property=report.nodeid, reason=first_failure_line(report),
                         details=report.longreprtext, invariant="(collection)")

    def pytest_collection_finish(self, session):
        for item in session.items:
            needs = list(dict.fromkeys(c for m in item.iter_markers("needs") for c in m.args))
            self.collected.append({
                "property": f"{item.module.__name__}::{item.name}" if getattr(item, "module", None) else item.nodeid,
                "invariant": invariant(item), "needs": needs,
                "markers": sorted({m.name for m in item.iter_markers()} - {"parametrize", "needs"})})

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        from properties.conformance import describe_precision, describe_space, subject_header  # noqa: F401
        from properties.plugin import SUBJECT_KEY

        subject = self.config.stash.get(SUBJECT_KEY, None)
        data = {
            "exitstatus": int(exitstatus),
            "seconds": time.time() - self.started,
            "deselected": self.config.stash.get(DESELECTED_KEY, ""),
            "profile": _profile(),
            "python": sys.version.split()[0],
            "subject": None if subject is None else {
                "name": subject.name, "space": describe_space(subject.space),
                "capabilities": sorted(subject.capabilities), "precision": describe_precision(subject)},
            "tests": list(self.tests.values()),
            "collected": self.collected,
        }
        with open(self.path, "w") as f:
            json.dump(data, f, indent=1)


def _profile() -> str:
    from hypothesis import settings

    return settings.get_current_profile_name()
