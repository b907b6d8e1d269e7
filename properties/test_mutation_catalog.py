"""The mutation catalog stays applicable (fast: nothing here runs the suite on a mutant).

A refactor of ``gpt/`` that moves or rewrites the code a mutant targets makes that mutant *stale*; the
nightly kill matrix would report it, but this check fails the ordinary CI run the moment it happens, so
the catalog is updated together with the refactor. The kill matrix itself is
``python -m properties.mutation`` (nightly job), never part of the default pytest run.
"""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from properties.mutation import runner
from properties.mutation.catalog import (BUG_CLASSES, EXAMPLE_FILE, EXAMPLE_MUTANTS, EXAMPLE_SUBJECT, MUTANTS,
                                         REQUIRED_BUG_CLASSES, Mutant)

pytestmark = pytest.mark.repo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutant", MUTANTS + EXAMPLE_MUTANTS, ids=lambda m: m.name)
def test_mutant_applies_exactly_once(mutant, tmp_path):
    """Each edit's original snippet occurs exactly once in the current source, and the edited file parses.
    gpt catalog: files under gpt/; example catalog: examples/own_model.py."""
    where = "gpt/" if mutant in MUTANTS else EXAMPLE_FILE
    assert mutant.file.startswith(where) and (ROOT / mutant.file).is_file(), f"{mutant.file} is not {where}"
    count = mutant.count(ROOT)
    assert count == 1, f"{mutant.name} is stale: its snippet occurs {count} times in {mutant.file}"
    copy = tmp_path / mutant.file
    copy.parent.mkdir(parents=True)
    copy.write_text((ROOT / mutant.file).read_text())
    assert mutant.apply(tmp_path) and copy.read_text() != (ROOT / mutant.file).read_text()
    ast.parse(copy.read_text(), filename=mutant.file)  # a mutant is a wrong program, never a broken one


def test_catalog_is_well_formed():
    """>= 30 mutants, unique snake_case names, known bug classes, one-line descriptions, real edits."""
    assert len(MUTANTS) >= 30 and len(EXAMPLE_MUTANTS) >= 12
    names = [m.name for m in MUTANTS + EXAMPLE_MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    for m in MUTANTS + EXAMPLE_MUTANTS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", m.name), m.name
        assert m.bug_class in BUG_CLASSES, f"{m.name}: unknown bug class {m.bug_class}"
        assert m.description and "\n" not in m.description, f"{m.name}: needs a one-line description"
        assert m.original and m.original != m.replacement, f"{m.name}: empty or no-op edit"


def test_every_required_bug_class_is_covered():
    """The issue's bug classes each have at least one mutant."""
    covered = {m.bug_class for m in MUTANTS}
    assert not set(REQUIRED_BUG_CLASSES) - covered, f"uncovered: {sorted(set(REQUIRED_BUG_CLASSES) - covered)}"


def test_stale_mutant_is_reported_stale(tmp_path):
    """A snippet that is missing, or occurs twice, is stale: the runner never runs it, never counts it killed."""
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "x.py").write_text("a = 1\na = 1\n")
    twice = Mutant("twice", "residual", "d", "gpt/x.py", "a = 1", "a = 2")
    gone = Mutant("gone", "residual", "d", "gpt/x.py", "b = 1", "b = 2")
    args = runner.parse_args(["--jobs", "1"])
    for m in (twice, gone):
        assert not m.apply(tmp_path)
        result = runner.run_mutant(m, tmp_path, tmp_path / "work", args, ["properties"])
        assert result.status == "stale" and result.seconds is None
    assert (tmp_path / "gpt" / "x.py").read_text() == "a = 1\na = 1\n"


def test_junit_parsing_and_report(tmp_path):
    """The first failing test in run order is the killer; the matrix and score follow from the results."""
    junit = tmp_path / "junit.xml"
    suite = ET.Element("testsuite")
    for name, time, failed in (("test_a", "1.5", False), ("test_b", "2.0", True), ("test_c", "1.0", True)):
        case = ET.SubElement(suite, "testcase", classname="properties.test_x", name=name, time=time)
        if failed:
            ET.SubElement(case, "failure", message=f"AssertionError: {name} broke\nmore")
    ET.ElementTree(suite).write(junit)
    failures, until_first, n = runner.parse_junit(junit)
    assert failures[0] == ("properties/test_x.py::test_b", "AssertionError: test_b broke") and until_first == 3.5
    assert n == 3 and len(failures) == 2
    results = [runner.Result("m1", "killed", "residual", "d", killed_by=failures[0][0], seconds=4.0),
               runner.Result("m2", "survived", "detach", "d", seconds=9.0)]
    summary = runner.summarise(results)
    assert summary["killed"] == 1 and summary["survived"] == 1 and summary["score"] == 0.5
    assert summary["median_time_to_kill"] == 4.0
    report = dict(profile="ci", jobs=2, machine=dict(cpu_count=2), started_at="now", total_seconds=10.0,
                  baseline=dict(status="passed", seconds=5.0, killed_by=None), summary=summary,
                  mutants=[runner.asdict(r) for r in results])
    text = runner.markdown(report)
    assert "| `m1` | residual | `test_x.py::test_b` | 4.0 s | killed |" in text
    assert "| `m2` | detach | - | - | **survived** |" in text and "1/2 killed (50.0 %)" in text


def test_warm_server_preloads_no_project_module():
    """Forked mutant runs are only sound if nothing preloaded in the warm server is (or lives in) this project."""
    import importlib.util

    from properties.mutation import warm

    for name in warm.PRELOAD:
        assert name.partition(".")[0] not in warm.PROJECT_PACKAGES, name
        spec = importlib.util.find_spec(name.partition(".")[0])
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        assert origin is None or ROOT not in origin.parents, f"{name} resolves inside the project: {origin}"


def test_default_selection_leaves_out_tooling_tests():
    """The mutation run tests model math: tooling tests and the mutation tests are not in it."""
    tests = runner.default_tests(ROOT)
    assert "properties/test_shape_dtype.py" in tests and "properties/test_gradcheck.py" in tests
    assert not {"properties/test_smoke_commands.py", "properties/test_workflows.py",
                "properties/test_mutation_catalog.py"} & set(tests)


def test_example_catalog_has_the_reparametrization_and_blind_spot_classes():
    """The example-model catalog holds the five exact reparametrizations (q/k order in the fused projection,
    GQA tiling, RoPE sign, partial rotary on the last features, SwiGLU gate/up) and the attention scale,
    residual and norm-eps bugs that random-weight properties miss."""
    classes = {m.bug_class for m in EXAMPLE_MUTANTS}
    assert {"qkv-layout", "gqa-grouping", "rope-rotate-half", "partial-rotary", "mlp-activation",
            "attention-scale", "residual", "norm-eps-or-dim"} <= classes


def test_example_catalog_runs_against_the_example_subject():
    """--catalog example selects the example mutants, passes the example subject to every pytest run and
    the default catalog passes no --subject."""
    args = runner.parse_args(["--catalog", "example"])
    assert args.subject == EXAMPLE_SUBJECT and runner.select([], "example") == EXAMPLE_MUTANTS
    cmd = runner.pytest_command(["properties"], "ci", Path("j.xml"), True, args.subject)
    assert f"--subject={EXAMPLE_SUBJECT}" in cmd
    assert not any(a.startswith("--subject") for a in runner.pytest_command(["p"], "ci", Path("j"), True,
                                                                             runner.parse_args([]).subject))
    with pytest.raises(SystemExit):
        runner.select([MUTANTS[0].name], "example")


def test_kill_table_names_catalogued_mutants_and_a_test_per_key(tmp_path):
    """kills.json (the fail-fast order's table) names only mutants of the catalog, every key is a
    ``file::test`` id, and killpower refuses a fail-fast report (its failures stop at the first killer)."""
    import json

    from properties import ordering
    from properties.mutation import killpower

    table = json.loads(ordering.KILLS.read_text())
    names = {m.name for m in MUTANTS}
    for key, killed in table["kills"].items():
        assert re.fullmatch(r"test_\w+\.py::test_\w+(\[.*\])?", key), key
        assert set(killed) <= names, f"{key}: {sorted(set(killed) - names)} are not in the catalog (renamed?)"
    report = tmp_path / "ff.json"
    report.write_text(json.dumps({"fail_fast": True, "mutants": []}))
    with pytest.raises(SystemExit, match="no-fail-fast"):
        killpower.load([str(report)])
