"""The report as an HTML page or a Markdown file, beside its PNG plots."""

from __future__ import annotations

import html as escape
import json
from pathlib import Path
from typing import Any

from runcoord.harness.report.data import ReplayData
from runcoord.harness.report.missing import CAUSES
from runcoord.harness.report.plots import all_plots
from runcoord.harness.report.render import (
    ROWS,
    cause_rows,
    cpu_rows,
    hop_rows,
    missing_causes,
    request_rows,
)


def _rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    systems = report["systems"]
    out = []
    for label, key, fmt in ROWS:
        out.append((label, [fmt(systems[n].get(key)) for n in systems]))
        if key == "missing_writes":
            out += cause_rows(report)
    return out


def _cause_table(report: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(cause, what it means, count per system) for the missing writes section."""
    systems = report["systems"]
    return [
        (
            cause,
            CAUSES.get(cause, ""),
            [str((systems[n].get("missing_writes_by_cause") or {}).get(cause, 0)) for n in systems],
        )
        for cause in missing_causes(report)
    ]


def _notes(report: dict[str, Any]) -> list[str]:
    out = []
    for name, figures in report["systems"].items():
        evidence = figures.get("missing_writes_evidence")
        if evidence:
            out.append(f"{name}: causes read from {evidence}")
        if figures.get("missing_writes_note"):
            out.append(f"{name}: {figures['missing_writes_note']}")
        for write in figures.get("missing_writes_detail") or []:
            if write.get("cause") == "unexplained":
                out.append(
                    f"{name}: unexplained: run {write['run_id']} {write['tool']} "
                    f"({write.get('tool_call_id') or 'never asked'}): {write['why']}"
                )
    return out


def write_html(report: dict[str, Any], replay: ReplayData, folder: Path) -> Path:
    plots = all_plots(replay, folder)
    names = list(report["systems"])
    head = "".join(f"<th>{escape.escape(n)}</th>" for n in names)
    body = _html_rows(_rows(report))
    causes = "".join(
        f"<tr><td>{escape.escape(cause)}</td><td>{escape.escape(meaning)}</td>"
        + "".join(f"<td class=n>{escape.escape(v)}</td>" for v in values)
        + "</tr>"
        for cause, meaning, values in _cause_table(report)
    )
    hops, cpu = _html_rows(hop_rows(report)), _html_rows(cpu_rows(report))
    requests = _html_rows(request_rows(report))
    notes = "".join(f"<li>{escape.escape(n)}</li>" for n in _notes(report))
    images = "".join(f'<p><img src="{p.name}" alt="{p.stem}"></p>' for p in plots)
    protocol = escape.escape(json.dumps(report["protocol"], indent=2))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>runcoord replay report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
td.n{{text-align:right;font-family:monospace}}</style></head><body>
<h1>runcoord replay report</h1>
<p>Ground truth: the sandbox gateway's audit log and the simulated provider's records.</p>
<table><tr><th>figure</th>{head}</tr>{body}</table>
<h2>Missing writes by cause</h2>
<p>Every expected write with no audit row, and why (runcoord/harness/report/missing.py);
<code>unexplained</code> must stay 0.</p>
<table><tr><th>cause</th><th>meaning</th>{head}</tr>{causes}</table>
<ul>{notes}</ul>
<h2>Where a tool step's time goes</h2>
<p>p50 / p99 ms per hop, from the journal, the ledger, the gateway's arrivals and the
provider's records (runcoord/harness/report/hops.py).</p>
<table><tr><th>hop</th>{head}</tr>{hops}</table>
<h2>CPU per turn</h2>
<table><tr><th>process (ms per turn)</th>{head}</tr>{cpu}</table>
<h2>Provider requests per turn</h2>
<p>What the simulated provider answered, by method and route: creates, submissions, and
the polls a system's watching costs.</p>
<table><tr><th>request</th>{head}</tr>{requests}</table>
{images}
<h2>Protocol</h2><pre>{protocol}</pre>
</body></html>
"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    return path


def _html_rows(rows: list[tuple[str, list[str]]]) -> str:
    return "".join(
        f"<tr><td>{escape.escape(label)}</td>"
        + "".join(f"<td class=n>{escape.escape(v)}</td>" for v in values)
        + "</tr>"
        for label, values in rows
    )


def write_markdown(report: dict[str, Any], replay: ReplayData, folder: Path) -> Path:
    plots = all_plots(replay, folder)
    names = list(report["systems"])
    lines = [
        "# runcoord replay report",
        "",
        "| figure | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in _rows(report)]
    lines += ["", "## Missing writes by cause", ""]
    lines += ["| cause | meaning | " + " | ".join(names) + " |"]
    lines += ["| --- | --- |" + " ---: |" * len(names)]
    lines += [
        f"| {cause} | {meaning} | " + " | ".join(values) + " |"
        for cause, meaning, values in _cause_table(report)
    ]
    lines += ["", *(f"- {n}" for n in _notes(report))]
    for title, first, rows in (
        ("Where a tool step's time goes (p50 / p99 ms)", "hop", hop_rows(report)),
        ("CPU per turn (ms)", "process", cpu_rows(report)),
        ("Provider requests per turn", "request", request_rows(report)),
    ):
        lines += ["", f"## {title}", "", f"| {first} | " + " | ".join(names) + " |"]
        lines += ["| --- |" + " ---: |" * len(names)]
        lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    lines += ["## Protocol", "", "```json", json.dumps(report["protocol"], indent=2), "```", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
