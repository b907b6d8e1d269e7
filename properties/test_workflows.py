"""The GitHub Actions workflows are valid and run the commands the README and the tools define.

Every ``.github/workflows/*.yml`` is validated offline against the GitHub workflow JSON schema bundled
with check-jsonschema (``--builtin-schema vendor.github-workflows``), and against its
``custom.github-workflows-require-timeout`` schema (every job sets ``timeout-minutes``), so a broken
workflow fails here rather than on GitHub. The run steps are then checked against the commands they must
run: ci.yml runs exactly the README's test command; nightly.yml runs it under the nightly profile plus the
mutation kill-matrix and uploads what they write; gpu.yml runs the GPU group and uploads the benchmark.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.repo

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SCHEMAS = ("vendor.github-workflows", "custom.github-workflows-require-timeout")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

try:
    import check_jsonschema  # noqa: F401  (the validator; ruamel.yaml comes with it)
    from ruamel.yaml import YAML
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("check-jsonschema is not installed; install the `ci` extra (pip install -e '.[ci]') "
                "to validate the GitHub workflows", allow_module_level=True)


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def load(path: Path) -> dict:
    # YAML 1.2 (ruamel), as GitHub reads it: `on` stays a string key instead of becoming True
    return YAML(typ="safe", pure=True).load(path.read_text())


def validate(*paths: Path, schema: str = SCHEMAS[0]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def commands(workflow: dict) -> list[str]:
    """Every shell command line of every run step: continuations joined, comments and blanks dropped."""
    lines = []
    for step in steps(workflow):
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()))
    return lines


def matching(workflow: dict, prefix: str) -> list[list[str]]:
    """The run lines that start with the command ``prefix``, as argument lists."""
    want = shlex.split(prefix)
    return [args for args in map(shlex.split, commands(workflow)) if args[:len(want)] == want]


def option(args: list[str], name: str) -> str:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {shlex.join(args)}")


def uploads(workflow: dict) -> list[dict]:
    return [step for step in steps(workflow) if step.get("uses", "").startswith("actions/upload-artifact@")]


def uploaded_paths(workflow: dict) -> set[str]:
    return {p.strip().rstrip("/") for step in uploads(workflow) for p in step["with"]["path"].splitlines()
            if p.strip()}


def readme_block_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    return [" ".join(line.split("#", 1)[0].split()) for block in blocks for line in block.splitlines()]


def readme_test_command() -> str:
    """The README's test command: the first `python -m pytest` line of its shell blocks (Set up and run)."""
    for line in readme_block_lines():
        if line.startswith("python -m pytest"):
            return line
    raise AssertionError("README.md has no `python -m pytest` line in a code block")


def readme_extras() -> str:
    for line in readme_block_lines():
        found = re.search(r"pip install -e \"?\.\[([^\]]+)\]", line)
        if found:
            return found.group(1)
    raise AssertionError("README.md has no `pip install -e \".[...]\"` line")


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict]:
    return {path.name: load(path) for path in workflow_files()}


def test_workflow_files_exist():
    """The three workflows the project documents are present."""
    assert {p.name for p in workflow_files()} >= {"ci.yml", "nightly.yml", "gpu.yml"}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_workflows_match_github_schema(schema):
    """Every workflow validates against the bundled GitHub workflow schema, and every job has a timeout."""
    result = validate(*workflow_files(), schema=schema)
    assert result.returncode == 0, f"{schema}:\n{result.stdout}{result.stderr}"


def _drop_runs_on(wf):
    del wf["jobs"][next(iter(wf["jobs"]))]["runs-on"]


def _unknown_top_level_key(wf):
    wf["triggers"] = wf.pop("on")


def _unknown_event(wf):
    wf["on"] = {"pushh": None}


def _step_with_run_and_uses(wf):
    wf["jobs"][next(iter(wf["jobs"]))]["steps"].append({"run": "echo hi", "uses": "actions/checkout@v4"})


def _bad_timeout(wf):
    wf["jobs"][next(iter(wf["jobs"]))]["timeout-minutes"] = "fifteen"


@pytest.mark.parametrize("breakage", [_drop_runs_on, _unknown_top_level_key, _unknown_event,
                                      _step_with_run_and_uses, _bad_timeout], ids=lambda f: f.__name__.strip("_"))
def test_validator_rejects_a_broken_workflow(tmp_path, breakage):
    """The schema check can fail: ci.yml copied as-is passes, and the same file with one defect is refused."""
    intact, broken = tmp_path / "intact.yml", tmp_path / "broken.yml"
    workflow = load(WORKFLOWS / "ci.yml")
    intact.write_text(json.dumps(workflow))  # JSON is YAML
    breakage(workflow)
    broken.write_text(json.dumps(workflow))
    assert validate(intact).returncode == 0, "control: the unbroken copy must validate"
    result = validate(broken)
    assert result.returncode != 0 and "broken.yml" in result.stdout, result.stdout + result.stderr


def test_validator_requires_job_timeouts(tmp_path):
    """A job without timeout-minutes is refused by the require-timeout schema."""
    workflow = load(WORKFLOWS / "ci.yml")
    for job in workflow["jobs"].values():
        job.pop("timeout-minutes", None)
    path = tmp_path / "no_timeout.yml"
    path.write_text(json.dumps(workflow))
    assert validate(path, schema=SCHEMAS[0]).returncode == 0
    assert validate(path, schema=SCHEMAS[1]).returncode != 0


def test_ci_runs_the_readme_test_command(workflows):
    """ci.yml runs exactly the README's test command, with CI=true (the `ci` profile) and no other pytest."""
    wf = workflows["ci.yml"]
    command = readme_test_command()
    assert command == "python -m pytest -n auto"
    pytest_lines = [line for line in commands(wf) if " -m pytest" in line or line.startswith("pytest")]
    assert pytest_lines == [command], pytest_lines
    job = wf["jobs"]["test"]
    assert str(job["env"]["CI"]).lower() == "true"


def test_ci_runner_matrix_and_speed_settings(workflows):
    """ci.yml: push and pull_request, Python 3.10-3.13 as strings on ubuntu, pip cache keyed on
    pyproject.toml, a timeout, and superseded runs cancelled."""
    wf = workflows["ci.yml"]
    assert {"push", "pull_request"} <= set(wf["on"])
    job = wf["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["strategy"]["matrix"]["python-version"] == ["3.10", "3.11", "3.12", "3.13"]
    setup = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup and setup[0]["with"]["cache"] == "pip"
    assert setup[0]["with"]["cache-dependency-path"] == "pyproject.toml"
    assert 0 < job["timeout-minutes"] <= 20
    assert wf["concurrency"]["cancel-in-progress"] is True


@pytest.mark.parametrize("name", ["ci.yml", "nightly.yml"])
def test_cpu_torch_comes_from_the_cpu_index_first(workflows, name):
    """On GitHub-hosted runners torch comes from the PyTorch CPU index, before the project install (which
    would otherwise pull the CUDA build from PyPI), and the project gets the README's extras."""
    wf = workflows[name]
    for job_name, job in wf["jobs"].items():
        lines = [" ".join(s.get("run", "").split()) for s in job["steps"]]
        torch_at = [i for i, l in enumerate(lines) if re.search(r"pip install (.* )?torch\b", l)]
        project_at = [i for i, l in enumerate(lines) if "pip install -e" in l]
        assert project_at, f"{name}:{job_name} never installs the project"
        assert torch_at and torch_at[0] < project_at[0], f"{name}:{job_name} must install CPU torch first"
        assert f"--index-url {CPU_INDEX}" in lines[torch_at[0]]
        assert f'.[{readme_extras()}]' in lines[project_at[0]]


@pytest.mark.parametrize("name,job", [("ci.yml", "test"), ("nightly.yml", "deep-suite")])
def test_hypothesis_database_is_cached_per_run(workflows, name, job):
    """.hypothesis is restored from the newest earlier run (restore-keys) and saved under a per-run key
    even when the tests fail, so earlier failures are replayed first."""
    job_steps = workflows[name]["jobs"][job]["steps"]
    restore = [s for s in job_steps if s.get("uses", "").startswith("actions/cache/restore@")]
    save = [s for s in job_steps if s.get("uses", "").startswith("actions/cache/save@")]
    assert restore and save
    assert restore[0]["with"]["path"] == save[0]["with"]["path"] == ".hypothesis"
    assert "${{ github.run_id }}" in restore[0]["with"]["key"] and restore[0]["with"]["restore-keys"].strip()
    assert save[0]["with"]["key"] == restore[0]["with"]["key"]
    assert save[0].get("if") == "always()"
    order = [s.get("uses", "") + s.get("run", "") for s in job_steps]
    test_step = next(i for i, s in enumerate(order) if "-m pytest" in s)
    assert order.index(restore[0]["uses"]) < test_step < order.index(save[0]["uses"])


def test_nightly_runs_deep_suite_and_mutation_and_uploads_them(workflows):
    """nightly.yml: scheduled and manual; the README test command under --hypothesis-profile nightly
    with a junit report; the mutation kill-matrices of gpt/ and of the example model; their markdown and JSON plus the reproducers
    (.hypothesis and the junit xml) uploaded even on failure."""
    wf = workflows["nightly.yml"]
    assert wf["on"]["schedule"][0]["cron"] and "workflow_dispatch" in wf["on"]
    suite = matching(wf, readme_test_command())
    assert len(suite) == 1 and option(suite[0], "--hypothesis-profile") == "nightly"
    junit = option(suite[0], "--junitxml")
    runs = matching(wf, "python -m properties.mutation")
    catalogs = sorted(option(r, "--catalog") if "--catalog" in " ".join(r) else "gpt" for r in runs)
    assert catalogs == ["example", "gpt"], catalogs  # gpt/'s catalog and the example model's, once each
    for mutation in runs:
        assert option(mutation, "--profile") == "ci" and option(mutation, "--jobs") == "2"
        report_json, report_md = option(mutation, "--json"), option(mutation, "--markdown")
        assert {report_json, report_md, junit, ".hypothesis"} <= uploaded_paths(wf)
    for step in uploads(wf):
        assert step.get("if") == "always()", step
        if any(p.strip().startswith(".") for p in step["with"]["path"].splitlines()):
            assert step["with"].get("include-hidden-files") is True, "upload-artifact@v4 skips dot-directories"


def test_gpu_workflow_runs_gpu_group_and_benchmark(workflows):
    """gpu.yml: a self-hosted GPU runner, never on pull_request; `python -m pytest -m gpu`, the smoke
    benchmark with its JSON uploaded, and no torch install (the runner's CUDA build is kept)."""
    wf = workflows["gpu.yml"]
    assert "pull_request" not in wf["on"] and "pull_request_target" not in wf["on"]
    assert "workflow_dispatch" in wf["on"]
    for job in wf["jobs"].values():
        assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    assert matching(wf, "python -m pytest -m gpu")
    bench = matching(wf, "python -m gpt.bench")
    assert len(bench) == 1 and option(bench[0], "--json") in uploaded_paths(wf)
    assert matching(wf, "python -m gpt.overfit --config configs/tiny_shakespeare.yaml")
    assert not [line for line in commands(wf) if re.search(r"pip install (.* )?torch\b", line)]
    assert all(step.get("if") == "always()" for step in uploads(wf))


def test_ci_entry_script_runs_the_readme_test_command():
    """.ci/run still runs the README's test command (python3 there is the same interpreter name)."""
    lines = [re.sub(r"^python3 ", "python ", " ".join(l.split()))
             for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert readme_test_command() in lines


def test_nightly_profile_is_random_and_recorded_on_github():
    """Under CI=true, as on GitHub, the profile the nightly workflow selects draws random examples and
    writes failures to the example database that the workflow caches and uploads."""
    import os

    probe = ("import json, properties.plugin; from hypothesis import settings; s = settings.get_profile('nightly'); "
             "print(json.dumps([s.derandomize, s.database is not None]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "CI": "true"},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    derandomize, has_database = json.loads(out.strip().splitlines()[-1])
    assert not derandomize and has_database, f"nightly under CI=true: derandomize={derandomize}, database={has_database}"


def test_ci_installs_the_pinned_test_stack(workflows):
    """constraints.txt pins the test stack (results depend on Hypothesis' and torch's versions): the CPU
    workflows and .ci/run install through it, and it pins each of torch, hypothesis, pytest, xdist and
    transformers to one version."""
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert {"torch", "hypothesis", "pytest", "pytest-xdist", "transformers"} <= set(pins)
    for name in ("ci.yml", "nightly.yml"):
        for job_name, job in workflows[name]["jobs"].items():
            installs = [" ".join(s.get("run", "").split()) for s in job["steps"] if "pip install" in s.get("run", "")]
            assert installs and all("-c constraints.txt" in line for line in installs), (name, job_name, installs)
    script = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert script and all("-c constraints.txt" in line for line in script)
