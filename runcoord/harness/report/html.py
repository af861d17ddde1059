"""The report as an HTML page or a Markdown file, beside its PNG plots."""

from __future__ import annotations

import html as escape
import json
from pathlib import Path
from typing import Any

from runcoord.harness.report.data import ReplayData
from runcoord.harness.report.plots import all_plots
from runcoord.harness.report.render import ROWS


def _rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    systems = report["systems"]
    return [(label, [fmt(systems[n].get(key)) for n in systems]) for label, key, fmt in ROWS]


def write_html(report: dict[str, Any], replay: ReplayData, folder: Path) -> Path:
    plots = all_plots(replay, folder)
    names = list(report["systems"])
    head = "".join(f"<th>{escape.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{escape.escape(label)}</td>"
        + "".join(f"<td class=n>{escape.escape(v)}</td>" for v in values)
        + "</tr>"
        for label, values in _rows(report)
    )
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
{images}
<h2>Protocol</h2><pre>{protocol}</pre>
</body></html>
"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    return path


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
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    lines += ["## Protocol", "", "```json", json.dumps(report["protocol"], indent=2), "```", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
