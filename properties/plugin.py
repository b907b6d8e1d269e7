"""The gpt-properties pytest plugin, loaded through the ``pytest11`` entry point of the installed package
(the repository's root conftest.py loads it for an uninstalled checkout).

What it adds: the ``--subject`` option and the ``subject`` fixture, the Hypothesis profiles
(dev/ci/nightly/replay), the markers, capability skips (``@pytest.mark.needs``), subject validation
before any test runs, conformance mode (only properties that exercise the subject are collected),
cheapest-first ordering, one torch thread per test process, the GPU group skip and one GPU per xdist
worker (``properties.gpu_pin``, the ``gpu_pin`` fixture), and the per-test record (``properties.record``)
that ``gpt-properties check`` turns into a report (``properties.report``).
"""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from properties import gpu_pin as pinning, ordering, record, sharding
from properties.conformance import (check_subject, deselect, describe_deselection, in_repository,
                                    subject_header)

# parent=default: under CI=true Hypothesis loads its own "ci" profile (derandomised, no database) first,
# and profiles registered without a parent would inherit that, nightly included
_common = dict(parent=settings.get_profile("default"), deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# dev: a quick local loop. ci: derandomised, so a red run is reproduced by rerunning it.
# nightly: 20x ci's examples, random, with the example database replaying past failures first.
settings.register_profile("dev", max_examples=8, **_common)
settings.register_profile("ci", max_examples=20, derandomize=True, **_common)
settings.register_profile("nightly", max_examples=400, **_common)
settings.register_profile("replay", max_examples=1, phases=[Phase.explicit, Phase.reuse], **_common)
settings.load_profile("ci" if os.environ.get("CI") else "dev")  # --hypothesis-profile overrides this

MARKERS = (
    "gpu: needs a CUDA device (run with `pytest -m gpu`); skipped without one",
    "slow: costs more than a few seconds per run",
    "repo: checks this repository itself (tooling, workflows, catalog, data), not a subject; not collected "
    "in conformance mode or from an installed package",
    "gpt_internal: checks internals of this project's gpt package; not collected for other subjects",
    "needs(*capabilities): the subject capabilities the property needs; skipped with the reason otherwise",
    "xdist_group(name): run on one xdist worker (registered by pytest-xdist too; here for runs without it)",
)
SUBJECT_KEY = pytest.StashKey[object]()


def pytest_addoption(parser):
    group = parser.getgroup("gpt-properties")
    group.addoption("--subject", default=None,
                    help="implementation under test: gpt, gpt-math, gpt-sdpa, hf-gpt2, hf-neox, hf-llama, "
                         "or package.module:factory (default: $GPT_PROPERTIES_SUBJECT or gpt)")
    group.addoption("--conformance", action="store_true",
                    help="conformance mode even for a gpt subject: collect only the properties that "
                         "exercise the subject (always on for other subjects)")
    group.addoption("--shards", type=int, default=None, metavar="K",
                    help="split every Hypothesis property into up to K items (at least 5 examples each) with "
                         "independent seeds, so xdist spreads one property over workers (default: 16 under "
                         "the nightly profile, else 1; $GPT_PROPERTIES_SHARDS)")
    group.addoption("--gpt-properties-json", default=None, metavar="PATH",
                    help="write every test's outcome, invariant, examples and reproducer to PATH "
                         "(what `gpt-properties check` reports from)")


def pytest_configure(config):
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    ordering.balance_xdist(config)
    config.pluginmanager.register(sharding.ShardPlugin(config), "gpt-properties-sharding")
    if _runs_tests(config):
        pinning.configure()
        # The drawn models are tiny: intra-op threads only add synchronisation, and under xdist every worker
        # would spawn one per core (measured: the suite runs ~4x faster serially with one thread).
        # GPT_PROPERTIES_THREADS=N overrides.
        import torch

        torch.set_num_threads(int(os.environ.get("GPT_PROPERTIES_THREADS", "1")))
    if config.getoption("--gpt-properties-json") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(record.Recorder(config), "gpt-properties-recorder")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller, per worker: whether ordering.balance_xdist chose loadgroup (workers do not see it)."""
    node.workerinput[ordering.LOADGROUP_KEY] = node.config.getvalue("dist") == "loadgroup"


def _runs_tests(config) -> bool:
    """False in xdist's controller, which only hands out items: it imports no torch before the workers start
    (on the 16-core GPU host, importing torch and gpt takes 11 s of the 34 s before the first item)."""
    return hasattr(config, "workerinput") or getattr(config.option, "numprocesses", None) in (None, 0)


def _subject(config):
    if SUBJECT_KEY not in config.stash:
        from properties.subject import load_subject

        spec = config.getoption("--subject")
        try:
            subject = load_subject(spec)
        except ModuleNotFoundError as e:
            # the `pytest` script, unlike `python -m pytest`, does not put the current directory on sys.path;
            # a user's `--subject mymodel:make` means the mymodel.py right here
            cwd = os.getcwd()
            if not spec or e.name != spec.split(":")[0].split(".")[0] or cwd in sys.path:
                raise
            sys.path.insert(0, cwd)
            subject = load_subject(spec)
        config.stash[SUBJECT_KEY] = subject
    return config.stash[SUBJECT_KEY]


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session):
    """Load and validate the subject once, before any test; a subject that cannot run stops the session
    with one message. A wrapper, so it runs after every sessionstart implementation: under xdist after
    the controller's, which starts the workers, so the check (importing torch and gpt: 4-6 s on the 16-core
    host) overlaps their start-up instead of delaying it (as a trylast implementation it ran first: pluggy
    calls trylast implementations last-registered first, and xdist registers its controller later)."""
    result = yield
    config = session.config
    if hasattr(config, "workerinput"):
        return result
    problem = check_subject(config.getoption("--subject"), lambda: _subject(config))
    if problem:  # pytest prints "ERROR: <problem>" once and exits 4 (usage error), no test counted
        raise pytest.UsageError(problem)
    _freeze_heap()
    return result


def pytest_collection_finish(session):
    _freeze_heap()


def _freeze_heap() -> None:
    """What is alive once the subject is loaded and the items collected (torch, gpt, the test modules and
    their strategies) lives to the end of the session: gc.freeze() takes it out of the cyclic collector's
    scans, so each full collection, and the five pytest runs at exit, scan only what the tests made.
    Measured on 2 cores with transformers loaded: 1.0 s less from a worker's last item to its exit."""
    gc.freeze()


def pytest_report_header(config):
    return subject_header(config.getoption("--subject"), config.stash.get(SUBJECT_KEY, None),
                          settings.get_current_profile_name())


@pytest.fixture(scope="session")
def subject(request):
    return _subject(request.config)


def _skip_missing_capabilities(items, subject) -> None:
    """``@pytest.mark.needs("kv_cache", ...)``: skipped at collection, the reason naming the property and
    the missing capability (reported at the test's own location)."""
    for item in items:
        # every needs marker (a module's pytestmark and the function's own), not only the closest one
        needed = dict.fromkeys(c for marker in item.iter_markers("needs") for c in marker.args)
        missing = [c for c in needed if c not in subject.capabilities]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"{item.name}: subject {subject.name} lacks capability {', '.join(missing)}"))


@pytest.fixture(scope="session")
def gpu_pin():
    """How this worker was pinned (properties.gpu_pin.GpuPin); skips without CUDA."""
    if pinning.PIN is None:
        pytest.skip("needs a CUDA device")
    return pinning.PIN



def pytest_collection_modifyitems(session, config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; the gpu group runs with `pytest -m gpu` on a GPU host")
        for item in items:
            if item.get_closest_marker("gpu"):  # not item.keywords: those also hold directory names
                item.add_marker(skip)
    conformance = config.getoption("--conformance") or not _is_gpt(_subject(config))
    kept, dropped = deselect(items, conformance=conformance, repository=in_repository())
    if dropped:
        config.hook.pytest_deselected(items=[item for item, _ in dropped])
        items[:] = kept
    _skip_missing_capabilities(items, _subject(config))
    ordering.order(items, longest_first=ordering.longest_first(config))
    summary = describe_deselection(dropped, _subject(config).name, conformance)
    config.stash[record.DESELECTED_KEY] = summary
    if hasattr(config, "workeroutput"):  # xdist: the controller prints it (pytest_testnodedown)
        config.workeroutput["gpt_properties_deselected"] = summary


def _is_gpt(subject) -> bool:
    from properties.subject import GPTSubject

    return isinstance(subject, GPTSubject)


def pytest_testnodedown(node, error):
    summary = getattr(node, "workeroutput", {}).get("gpt_properties_deselected")
    if summary is not None:
        node.config.stash[record.DESELECTED_KEY] = summary


def pytest_terminal_summary(terminalreporter):
    summary = terminalreporter.config.stash.get(record.DESELECTED_KEY, None)
    if summary:
        terminalreporter.write_line(summary)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Inside Hypothesis' own wrapper: keep its statistics for the record, and pass them on to it."""
    from hypothesis.statistics import collector

    outer = collector.value

    def keep(stats):
        item.stash[record.STATS_KEY] = stats
        if outer is not None:
            outer(stats)

    with collector.with_value(keep):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    record.annotate(item, call, report)
    return report


def repository_root() -> Path:
    return Path(__file__).resolve().parent.parent
