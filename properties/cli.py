"""``gpt-properties``: check a model against the property suite and print a conformance report.

    gpt-properties check mymodel:make [--profile ci|nightly|dev] [-n N] [--report out.md] [--json out.json]
                                      [--junit out.xml] [-x]
    gpt-properties list [SPEC]
    gpt-properties --version            (also: python -m properties ...)

``check`` runs pytest on the installed suite (``pytest --pyargs properties``) in a subprocess from the
current directory, so ``mymodel`` is imported from there; the plugin records every test's outcome
(properties.record) and ``properties.report`` renders the report. The exit status is pytest's: 0 when
everything collected passed or skipped, non-zero on any failure or when the subject is not usable.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from properties import __version__


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"gpt-properties": __version__, "python": sys.version.split()[0]}
    for name in ("torch", "hypothesis", "pytest", "pytest-xdist", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _pytest(args: list, json_path: str, capture: bool) -> subprocess.CompletedProcess:
    # -p properties.plugin: a no-op where the entry point registered it (same name), and what loads it where
    # the package is only on PYTHONPATH
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "properties", "-p", "properties.plugin",
           "-p", "no:cacheprovider", "-p", "no:randomly",
           "--gpt-properties-json", json_path, *args]
    env = dict(os.environ)
    # the user's module is imported from the current directory, as `python -m pytest` does for the tests
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(cmd, env=env, text=True, capture_output=capture)


def check(args) -> int:
    from properties.report import render

    with tempfile.TemporaryDirectory() as tmp:
        record = str(Path(tmp) / "record.json")
        pytest_args = ["--subject", args.spec, "--hypothesis-profile", args.profile, "-q", "--tb=short"]
        if args.n:
            pytest_args += ["-n", str(args.n)]
        if args.junit:
            pytest_args += ["--junitxml", args.junit]
        if args.x:
            pytest_args.append("-x")
        if not args.include_slow:
            pytest_args += ["-m", "not slow and not gpu"]
        proc = _pytest(pytest_args, record, capture=True)
        if not Path(record).is_file():  # the session never started: the subject is not usable, or a usage error
            sys.stderr.write(proc.stderr or proc.stdout)
            return proc.returncode or 4
        data = json.loads(Path(record).read_text())
    data["versions"], data["spec"], data["command"] = versions(), args.spec, shlex.join(pytest_args)
    text = render(data)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if proc.returncode not in (0, 1, 5):  # interrupted, internal or usage error: show pytest's words
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    return proc.returncode


def list_properties(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        record = str(Path(tmp) / "record.json")
        pytest_args = ["--collect-only", "-q", "-m", "not gpu"]
        if args.spec:
            pytest_args += ["--subject", args.spec]
        else:
            pytest_args.append("--conformance")
        proc = _pytest(pytest_args, record, capture=True)
        if not Path(record).is_file():
            sys.stderr.write(proc.stderr or proc.stdout)
            return proc.returncode or 4
        data = json.loads(Path(record).read_text())
    rows = data["collected"]
    width = max((len(r["property"]) for r in rows), default=10)
    print(f"{'property':{width}}  needs{' ' * 22}invariant")
    for r in rows:
        needs = ",".join(r["needs"]) or "-"
        print(f"{r['property']:{width}}  {needs:27}{r['invariant']}")
    print(f"\n{len(rows)} properties" + (f"; {data['deselected']}" if data["deselected"] else ""))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpt-properties", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="store_true", help="print the versions results depend on")
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("check", help="run the suite against SPEC and print a conformance report")
    c.add_argument("spec", help="package.module:factory (make(config) -> nn.Module, or a Subject), or a "
                                "built-in subject (gpt, hf-llama, ...)")
    c.add_argument("--profile", default="ci", choices=["dev", "ci", "nightly", "replay"],
                   help="Hypothesis profile (default ci: 20 derandomised examples per property)")
    c.add_argument("-n", type=str, default=None, help="pytest-xdist workers (a number or 'auto')")
    c.add_argument("-x", action="store_true", help="stop at the first failure")
    c.add_argument("--include-slow", action="store_true", help="also run tests marked slow")
    c.add_argument("--report", help="also write the report (markdown) here")
    c.add_argument("--json", help="also write the full record (JSON) here")
    c.add_argument("--junit", help="also write pytest's junit xml here")
    ls = sub.add_parser("list", help="print the properties and the capabilities each needs")
    ls.add_argument("spec", nargs="?", help="list what runs for this subject (default: any other implementation)")
    args = parser.parse_args(argv)
    if args.version:
        print("\n".join(f"{k} {v}" for k, v in versions().items()))
        return 0
    if args.command == "check":
        return check(args)
    if args.command == "list":
        return list_properties(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
