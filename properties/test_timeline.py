"""properties/timeline.py, the record behind ``python -m properties.speed --scaling``: every phase report of
every worker reaches the controller's record, and each worker's start-up splits into phases that add up
exactly to it: spawn + boot + configure + collect + wait = first item's start - launch."""
import json
import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import settings

from properties import timeline

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.repo, pytest.mark.slow]


def test_worker_startup_phases_add_up_to_the_startup(pytester, monkeypatch):
    if settings.get_current_profile_name() != "nightly":
        pytest.skip("starts a pytest run with an xdist worker (~5 s on 2 cores): runs in the nightly profile")
    pytester.makepyfile(test_tiny="""
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_item(i):
            assert i >= 0
        """)
    trace = pytester.path / "timeline.json"
    monkeypatch.setenv(timeline.ENV, str(trace))
    root = str(Path(timeline.__file__).resolve().parents[1])  # a checkout's properties, or the installed one
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    launch = time.time()
    result = pytester.runpytest_subprocess("-n", "1", "-p", "properties.timeline", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    record = json.loads(trace.read_text())
    spans = timeline.split(record, launch)
    assert len(record["rows"]) == 6 * 3 and {r[0] for r in record["rows"]} <= {"gw0"}
    assert set(record["marks"]["workers"]) == {r[0] for r in record["rows"]}, "a worker sent no milestones"
    phases = spans["startup_phases"]
    assert set(phases) == set(timeline.PHASES)
    assert all(s >= -0.02 for s in phases.values()), phases  # /proc start times are in 10 ms ticks
    assert math.isclose(sum(phases.values()), spans["startup"], abs_tol=1e-6), (phases, spans["startup"])
