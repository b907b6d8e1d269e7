"""Run the property suite against every catalogued mutant and report the kill matrix.

    python -m properties.mutation --jobs 2 --json out/mutation/kill_matrix.json \\
        --markdown out/mutation/kill_matrix.md

1. The project (tracked and untracked-but-not-ignored files) is copied once to a snapshot in a temporary
   folder, so edits made in the working tree while the run goes on cannot leak into it.
2. The unmutated snapshot runs first: any failure there is a false alarm and fails the run.
3. Each mutant is applied to its own copy of the snapshot (its snippet must match exactly once, else it
   is *stale*), and pytest runs there in a subprocess with cwd and PYTHONPATH set to the copy, fail-fast
   (-x), the chosen Hypothesis profile, without xdist and within a time limit. A plugin refuses to run
   unless ``gpt`` is imported from the copy.
4. Status per mutant: killed (a test failed: the first failing test and the time to kill are recorded),
   survived (every test passed), stale, timeout, error (pytest could not run: a collection or usage
   error). The exit status is 0 only when the baseline passed and every mutant was killed.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from properties.mutation import warm
from properties.mutation.catalog import BUG_CLASSES, CATALOG_SUBJECTS, CATALOGS, Mutant

PROJECT = Path(__file__).resolve().parents[2]
# tooling tests, not model math: never part of a mutation run
EXCLUDED = ("properties/test_smoke_commands.py", "properties/test_workflows.py")
EXCLUDED_PREFIX = "properties/test_mutation"
MARKERS = "not slow and not gpu"
SKIP_DIRS = {".git", "__pycache__", ".hypothesis", ".pytest_cache", ".benchmarks"}


@dataclass
class Result:
    name: str
    status: str  # killed | survived | stale | timeout | error | passed | false-alarm
    bug_class: str = ""
    description: str = ""
    file: str = ""
    killed_by: Optional[str] = None  # first failing test, as a pytest node id
    reason: Optional[str] = None  # first line of its failure message
    seconds: Optional[float] = None  # wall time of the pytest run (time to kill when killed)
    suite_seconds: Optional[float] = None  # test time until the first failure, from the junit report
    returncode: Optional[int] = None
    failures: list = field(default_factory=list)  # every failing test (all of them with --no-fail-fast)
    output_tail: Optional[str] = None  # end of pytest's output, kept for anything but a clean kill/pass


# ---------------------------------------------------------------------- project copies
def project_files(root: Path) -> list[str]:
    """Files of the project as git sees them (tracked and untracked-not-ignored), else a filtered walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                 and not SKIP_DIRS.intersection(p.relative_to(root).parts)]
    return sorted(f for f in files if (root / f).is_file() and not SKIP_DIRS.intersection(Path(f).parts))


def snapshot(root: Path, dest: Path) -> Path:
    for f in project_files(root):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, dest / f)
    return dest


def warm_bytecode(snap: Path, tests: list[str], profile: str, subject: str) -> None:
    """Collect the suite once in the snapshot with bytecode writing on, so every copy starts with compiled
    modules and pytest's assertion-rewritten test modules in ``__pycache__`` (about 1.4 s of every run).
    A mutated file's cached bytecode is deleted when the mutant is applied, so it is compiled from the edit."""
    cmd = pytest_command(tests, profile, snap / ".collect.xml", False, subject) + ["--collect-only"]
    env = run_env(snap, 1, False)
    env.pop("PYTHONDONTWRITEBYTECODE")
    subprocess.run(cmd, cwd=snap, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    (snap / ".collect.xml").unlink(missing_ok=True)


def default_tests(root: Path, exclude=()) -> list[str]:
    """The property files; the plugin runs their items cheapest first (properties/ordering.py), since -x."""
    found = sorted(str(p.relative_to(root)) for p in (root / "properties").glob("test_*.py"))
    skip = {*EXCLUDED, *(str(Path(e)) for e in exclude)}
    return [f for f in found if f not in skip and not f.startswith(EXCLUDED_PREFIX)]


# ---------------------------------------------------------------------- one pytest run
def pytest_command(tests: list[str], profile: str, junit: Path, fail_fast: bool, subject: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-rfE", "--tb=short", "-p", "no:cacheprovider",
           "-p", "no:randomly", "-p", "properties.mutation._plugin", f"--hypothesis-profile={profile}",
           "-m", MARKERS, f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    if subject:
        cmd.append(f"--subject={subject}")
    if importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "0"]  # xdist's -x stops late; one process per mutant, mutants run in parallel instead
    if fail_fast:
        cmd.append("-x")
    return cmd


def run_env(copy: Path, threads: int, shrink: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "GPT_PROPERTIES_SUBJECT")}
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", GPT_MUTATION_ROOT=str(copy),
               GPT_MUTATION_NO_SHRINK="0" if shrink else "1", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0")
    return env


def parse_junit(path: Path) -> tuple[list[tuple[str, str]], Optional[float], int]:
    """([(node id, message)] of failing tests in run order, test seconds until the first failure, #tests)."""
    if not path.is_file():
        return [], None, 0
    try:
        cases = list(ET.parse(path).getroot().iter("testcase"))
    except ET.ParseError:
        return [], None, 0
    failures, elapsed, until_first = [], 0.0, None
    for case in cases:
        elapsed += float(case.get("time") or 0)
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is None:
            continue
        classname, name = case.get("classname", ""), case.get("name", "")
        node = f"{classname.replace('.', '/')}.py::{name}" if classname else name
        message = (bad.get("message") or bad.text or "").strip().splitlines()
        failures.append((node, message[0][:300] if message else ""))
        if until_first is None:
            until_first = round(elapsed, 2)
    return failures, until_first, len(cases)


def _run_subprocess(copy: Path, cmd: list[str], env: dict, timeout: float) -> tuple[Optional[int], bool, str]:
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pytest process group this function started
        out, _ = proc.communicate()
        timed_out = True
    return proc.returncode, timed_out, out.decode(errors="replace")


def _run_forked(copy: Path, cmd: list[str], env: dict, timeout: float, threads: int) -> tuple[Optional[int], bool, str]:
    log_path = copy / ".mutation-output.txt"
    code, timed_out = warm.run(copy, cmd[3:], env, log_path, threads, timeout)  # cmd[3:]: after "python -m pytest"
    return code, timed_out, log_path.read_text(errors="replace") if log_path.is_file() else ""


def run_pytest(copy: Path, tests: list[str], profile: str, timeout: float, threads: int, shrink: bool,
               fail_fast: bool, result: Result, fork: bool = False, subject: str = "") -> Result:
    junit = copy / ".mutation-junit.xml"
    cmd = pytest_command(tests, profile, junit, fail_fast, subject)
    env = run_env(copy, threads, shrink)
    start = time.monotonic()
    if fork:
        returncode, timed_out, text = _run_forked(copy, cmd, env, timeout, threads)
    else:
        returncode, timed_out, text = _run_subprocess(copy, cmd, env, timeout)
    result.seconds = round(time.monotonic() - start, 2)
    result.returncode = returncode
    failures, until_first, n_tests = parse_junit(junit)
    result.failures = [node for node, _ in failures]
    if timed_out:
        result.status = "timeout"
    elif returncode == 1 and failures:
        result.status = "killed"
        result.killed_by, result.reason = failures[0]
        result.suite_seconds = until_first
    elif returncode == 0 and n_tests:
        result.status = "survived"
    else:
        result.status = "error"  # collection error, usage error (e.g. gpt not imported from the copy), ...
    if result.status not in ("killed", "survived"):
        result.output_tail = text[-3000:]
    return result


# ---------------------------------------------------------------------- baseline and mutants
def run_baseline(snap: Path, work: Path, args, tests) -> Result:
    copy = work / "baseline"
    shutil.copytree(snap, copy)
    result = run_pytest(copy, tests, args.profile, args.timeout, args.threads, args.shrink, True,
                        Result("(unmutated)", "error", description="the project as it is"), args.fork,
                        args.subject)
    result.status = {"survived": "passed", "killed": "false-alarm"}.get(result.status, result.status)
    if result.status == "false-alarm":
        result.output_tail = None
    if not args.keep:
        shutil.rmtree(copy, ignore_errors=True)
    return result


def run_mutant(mutant: Mutant, snap: Path, work: Path, args, tests) -> Result:
    result = Result(mutant.name, "stale", mutant.bug_class, mutant.description, mutant.file)
    count = mutant.count(snap)
    if count != 1:
        result.reason = f"original snippet found {count} times in {mutant.file} (must be exactly once)"
        return result
    copy = work / mutant.name
    shutil.copytree(snap, copy)
    try:
        if not mutant.apply(copy) or mutant.replacement not in (copy / mutant.file).read_text():
            result.reason = "the edit did not apply"
            return result
        edited = copy / mutant.file
        for stale in (edited.parent / "__pycache__").glob(f"{edited.stem}.*.pyc"):
            stale.unlink()  # the unmutated module's bytecode from warm_bytecode
        return run_pytest(copy, tests, args.profile, args.timeout, args.threads, args.shrink,
                          not args.no_fail_fast, result, args.fork, args.subject)
    finally:
        if not args.keep:
            shutil.rmtree(copy, ignore_errors=True)


# ---------------------------------------------------------------------- reports
def _short(node: Optional[str]) -> str:
    return node.removeprefix("properties/") if node else "-"


def summarise(results: list[Result]) -> dict:
    times = [r.seconds for r in results if r.status == "killed"]
    counts = {s: sum(r.status == s for r in results) for s in ("killed", "survived", "stale", "timeout", "error",
                                                               "not-run")}
    total = len(results)
    return dict(total=total, **counts, score=round(counts["killed"] / total, 4) if total else None,
                median_time_to_kill=round(statistics.median(times), 2) if times else None,
                max_time_to_kill=round(max(times), 2) if times else None)


def markdown(report: dict) -> str:
    s, b = report["summary"], report["baseline"]
    invalid = b["status"] not in ("passed", "skipped")
    lines = ["# Mutation kill matrix", ""]
    if invalid:
        lines += [f"**Invalid run: the unmutated code fails ({b['status']}, `{_short(b.get('killed_by'))}`), so "
                  "no kill below means anything; the remaining mutants were not run.**", ""]
    command = report.get("command") or "python -m properties.mutation"
    target = {"gpt": "`gpt/`"}.get(report.get("catalog", "gpt"), f"`{report.get('subject')}`")
    lines += [f"Profile `{report['profile']}`, {s['total']} mutants of {target}, `{command}` on "
              f"{report['machine']['cpu_count']} cores with {report['jobs']} jobs, {report['started_at']}.", "",
              "| mutant | bug class | first killing property | time to kill | status |",
              "|---|---|---|---:|---|"]
    for r in report["mutants"]:
        t = f"{r['seconds']:.1f} s" if r["status"] == "killed" else "-"
        lines.append(f"| `{r['name']}` | {r['bug_class']} | `{_short(r['killed_by'])}` | {t} | {r['status']} |"
                     if r["killed_by"] else f"| `{r['name']}` | {r['bug_class']} | - | {t} | **{r['status']}** |")
    score = f"{s['killed']}/{s['total']} killed ({100 * s['score']:.1f} %)" if s["total"] else "no mutants"
    lines += ["", f"**Mutation score: {score}**"
              + "".join(f", {s[k]} {k}" for k in ("survived", "stale", "timeout", "error", "not-run") if s[k]) + ".",
              f"Time to kill (wall time of the mutant's pytest run, startup included): median "
              f"{_secs(s['median_time_to_kill'])}, max {_secs(s['max_time_to_kill'])}.",
              f"Baseline (unmutated code): {b['status']} in {_secs(b['seconds'])}"
              + (f", first failure `{_short(b['killed_by'])}`" if b.get("killed_by") else "") + ".",
              f"Total runtime: {report['total_seconds']:.0f} s.", ""]
    by_property: dict[str, int] = {}
    for r in report["mutants"]:
        if r["status"] == "killed":
            by_property[_short(r["killed_by"])] = by_property.get(_short(r["killed_by"]), 0) + 1
    if by_property:
        lines += ["| first killing property | mutants |", "|---|---:|"]
        lines += [f"| `{k}` | {v} |" for k, v in sorted(by_property.items(), key=lambda kv: -kv[1])]
        lines.append("")
    lines += ["## Mutants", ""]
    lines += [f"- `{r['name']}` ({r['bug_class']}: {BUG_CLASSES.get(r['bug_class'], '')}): {r['description']}"
              + (f" *{r['reason']}*" if r["status"] in ("stale",) and r.get("reason") else "")
              for r in report["mutants"]]
    return "\n".join(lines) + "\n"


def _secs(x) -> str:
    return "-" if x is None else f"{x:.1f} s"


# ---------------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m properties.mutation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="ci", help="Hypothesis profile (default ci)")
    p.add_argument("--catalog", choices=sorted(CATALOGS), default="gpt",
                   help="gpt: mutants of gpt/ against the gpt subject (default); example: mutants of "
                        "examples/own_model.py against that model as the subject")
    p.add_argument("--subject", default=None,
                   help="the suite's --subject for every run (default: the catalog's, e.g. "
                        "examples.own_model:OwnSubject for --catalog example)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these mutants (repeatable, or a comma-separated list)")
    p.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per pytest run (default 1: the suite's tensors are tiny, and "
                        "on a 2-core machine one thread runs it several times faster than two)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant run (default 600)")
    p.add_argument("--tests", action="append", default=[], metavar="PATH",
                   help="test files or node ids to run, in order (repeatable; default: properties/test_*.py "
                        f"minus {', '.join(EXCLUDED)} and the mutation tests, cheap properties first)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATH",
                   help="leave this test file out of the default selection (repeatable)")
    p.add_argument("--json", type=Path, help="write the JSON report here")
    p.add_argument("--markdown", type=Path, help="write the markdown kill matrix here")
    p.add_argument("--shrink", action="store_true",
                   help="let Hypothesis shrink failing examples (slower; the kills are the same)")
    p.add_argument("--no-fail-fast", action="store_true",
                   help="run the whole suite on each mutant and record every failing test (slow)")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (debugging only)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies")
    p.add_argument("--no-fork", dest="fork", action="store_false",
                   help="start a fresh interpreter per mutant instead of forking a warm one (slower by the "
                        "4-6 s of importing torch and the test stack; the verdicts are the same)")
    p.add_argument("--list", action="store_true", help="list the catalog and exit")
    p.add_argument("--project", type=Path, default=PROJECT, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.jobs = max(1, args.jobs)
    if args.subject is None:
        args.subject = CATALOG_SUBJECTS[args.catalog]
    args.threads = max(1, args.threads)
    args.fork = args.fork and warm.available()
    return args


def select(only: list[str], catalog: str = "gpt") -> list[Mutant]:
    mutants = CATALOGS[catalog]
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    if not names:
        return list(mutants)
    known = {m.name: m for m in mutants}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutant(s) in the {catalog} catalog: {', '.join(unknown)}; see --list")
    return [known[n] for n in dict.fromkeys(names)]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for m in CATALOGS[args.catalog]:
            print(f"{m.name:40} {m.bug_class:28} {m.description}")
        return 0
    mutants = select(args.only, args.catalog)
    started = time.monotonic()
    started_at = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="gpt-mutation-"))
    os.environ.setdefault("PYTHONHASHSEED", "0")  # before the warm server starts: forks inherit its seed
    try:
        snap = snapshot(args.project.resolve(), work / "snapshot")
        tests = args.tests or default_tests(snap, args.exclude)
        warm_bytecode(snap, tests, args.profile, args.subject)
        log(f"snapshot of {args.project} in {snap}; {len(mutants)} mutants, profile {args.profile}, "
            f"{args.jobs} jobs x {args.threads} threads; tests: {' '.join(tests)}")
        results: dict[str, Result] = {}
        baseline = Result("(unmutated)", "skipped", seconds=0.0)
        with cf.ThreadPoolExecutor(args.jobs) as pool:
            base_future = None if args.no_baseline else pool.submit(run_baseline, snap, work, args, tests)
            futures = {pool.submit(run_mutant, m, snap, work, args, tests): m for m in mutants}
            pending = set(futures) | ({base_future} if base_future else set())
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    if f is base_future:
                        baseline = f.result()
                        log(f"baseline: {baseline.status} in {baseline.seconds:.1f} s"
                            + (f" ({_short(baseline.killed_by)}: {baseline.reason})" if baseline.killed_by else ""))
                        if baseline.status != "passed":
                            for g in pending:
                                g.cancel()
                            pending = {g for g in pending if not g.cancelled()}
                    elif not f.cancelled():
                        r = f.result()
                        results[r.name] = r
                        log(f"[{len(results)}/{len(mutants)}] {r.status:8} {r.name}"
                            + (f" by {_short(r.killed_by)} in {r.seconds:.1f} s" if r.status == "killed" else "")
                            + (f": {r.reason}" if r.status == "stale" else ""))
        ordered = [results.get(m.name) or Result(m.name, "not-run", m.bug_class, m.description, m.file)
                   for m in mutants]
        report = dict(
            command=" ".join(["python -m properties.mutation", *(argv if argv is not None else sys.argv[1:])]),
            catalog=args.catalog, subject=args.subject or "gpt", profile=args.profile, jobs=args.jobs,
            threads_per_job=args.threads, timeout_s=args.timeout,
            shrink=args.shrink, fail_fast=not args.no_fail_fast, tests=tests, started_at=started_at,
            total_seconds=round(time.monotonic() - started, 1),
            machine=dict(cpu_count=os.cpu_count(), python=platform.python_version(), platform=platform.platform()),
            baseline=asdict(baseline), summary=summarise(ordered), mutants=[asdict(r) for r in ordered])
        ok = baseline.status in ("passed", "skipped") and all(r.status == "killed" for r in ordered)
        report["ok"] = ok
        text = markdown(report)
        print(text)
        for path, content in ((args.json, json.dumps(report, indent=2) + "\n"), (args.markdown, text)):
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        if baseline.status not in ("passed", "skipped"):
            log(f"FALSE ALARM: the unmutated code fails ({baseline.status}); fix the suite or the code first")
            if baseline.output_tail:
                log(baseline.output_tail)
        for r in ordered:
            if r.status in ("error", "timeout") and r.output_tail:
                log(f"--- {r.name} ({r.status}) ---\n{r.output_tail}")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
