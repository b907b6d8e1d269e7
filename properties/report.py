"""The conformance report (markdown) of one ``gpt-properties check`` run, from the plugin's record."""
from __future__ import annotations

import shlex


def _examples(entry) -> str:
    ex = entry.get("examples")
    if not ex:
        return "-"
    text = str(ex["passed"] + ex["failed"])
    return text + (f" ({ex['failed']} failing)" if ex["failed"] else "")


def _verdict(entry) -> str:
    outcome = entry["outcome"]
    if outcome == "passed":
        return "passed"
    reason = " ".join(entry.get("reason", "").split()).replace("|", "\\|")
    name = entry.get("test_name", "")
    if name and reason.startswith(name + ": "):  # skip reasons start with the property's name
        reason = reason[len(name) + 2:]
    return f"**{outcome}**: {reason}" if outcome in ("failed", "error") else f"{outcome}: {reason}"


def reproducer(entry, data) -> str:
    module, _, name = entry.get("property", entry["nodeid"]).partition("::")
    base = name.split("[")[0]
    return (f"python -m pytest --pyargs {module} -k {shlex.quote(base)} --subject {shlex.quote(data['spec'])} "
            f"--hypothesis-profile {data['profile']} -p no:cacheprovider")


def _order(entry) -> float:
    """Cheapest first by measured cost (properties/costs.json), whatever order the run had (xdist reports in
    completion order; one process runs by kill power, properties/ordering.py)."""
    from properties.ordering import seconds

    return seconds(entry["nodeid"])


def render(data: dict) -> str:
    v, subject = data["versions"], data.get("subject") or {}
    tests = sorted(data["tests"], key=_order)
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    verdict = "FAIL" if counts["failed"] or counts["error"] else "PASS"
    lines = [
        f"# gpt-properties conformance report: {data['spec']}: {verdict}",
        "",
        f"- suite: gpt-properties {v['gpt-properties']}; torch {v['torch']}, hypothesis {v['hypothesis']}, "
        f"pytest {v['pytest']}, pytest-xdist {v['pytest-xdist']}, transformers {v['transformers']}, "
        f"python {v['python']}",
        f"- subject: `{data['spec']}` ({subject.get('name', '?')})",
        f"- config space: `{subject.get('space', '?')}`",
        f"- capabilities: {', '.join(subject.get('capabilities', [])) or 'none'}",
        f"- precision: {subject.get('precision', '?')}",
        f"- profile: {data['profile']}; pytest {data.get('command', '')}",
        f"- result: {counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
        f"{counts['skipped']} skipped in {data['seconds']:.1f} s",
    ]
    if data.get("deselected"):
        lines.append(f"- not collected: {data['deselected'].split(': ', 2)[-1]}")
    lines += ["", "| property | invariant | verdict | examples | time (s) |", "|---|---|---|---|---|"]
    for t in tests:
        prop = t.get("property", t["nodeid"]).replace("properties.", "", 1)
        invariant = t.get("invariant", "").replace("|", "\\|")
        lines.append(f"| `{prop}` | {invariant} | {_verdict(t)} | {_examples(t)} | {t['duration']:.2f} |")
    failures = [t for t in tests if t["outcome"] in ("failed", "error")]
    if failures:
        lines += ["", "## Failures"]
    for t in failures:
        lines += ["", f"### `{t.get('property', t['nodeid'])}`", "", f"- why: {t.get('reason', '')}"]
        if t.get("rebuild"):
            lines.append(f"- shrunk example (config and seed): `rebuild: {t['rebuild']}`")
        if t.get("reproduce_failure"):
            lines.append(f"- replay blob: `{t['reproduce_failure']}`")
        lines.append(f"- reproduce: `{reproducer(t, data)}`")
    return "\n".join(lines)
