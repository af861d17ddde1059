"""Stories and scans as text for people, or as JSON for tools."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from datetime import UTC, datetime
from typing import Any

from runcoord.forensics.scan import Scan
from runcoord.forensics.timeline import NOTABLE_GAP_MS, Story


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _short(ref: str) -> str:
    # Effect keys are 68 characters; their first 12 identify them in one run.
    return ref[:12] + "…" if ref.startswith("ek1_") else ref


def story_text(story: Story) -> str:
    j = story.journal
    out = [
        textwrap.fill(story.headline, 100),
        f"thread {story.thread_id}; started {_clock(story.started_at_ms)}; journal partition "
        f"{j.get('partition')}, offsets {j.get('first_offset')}..{j.get('last_offset')} "
        f"({j.get('events')} events)",
        "",
        "What happened",
    ]
    for finding in story.findings:
        out.append(textwrap.fill(finding, 100, initial_indent="  - ", subsequent_indent="    "))
    out += ["", "Timeline (time since the run was accepted, gap since the line before)"]
    for ln in story.lines:
        gap = f"+{ln.gap_ms / 1000:.3f}" if ln.gap_ms else ""
        mark = "!" if ln.gap_ms >= NOTABLE_GAP_MS else " "
        out.append(
            f"  {ln.since_start_ms / 1000:8.3f} s {gap:>8}{mark} {ln.source:<7} {ln.text}"
            + (f"  [{_short(ln.ref)}]" if ln.ref else "")
        )
    return "\n".join(out)


def to_json(value: Any) -> str:
    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, datetime):
            return o.isoformat()
        raise TypeError(f"{type(o).__name__} is not JSON")

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, default=default, indent=2, sort_keys=False)


def _at(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else str(value)


def scan_text(result: Scan) -> str:
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.counts().items())
    out = [f"Scan {_at(result.start)} .. {_at(result.end)}: {counts}."]
    if result.clusters:
        out += ["", "Duplicate-like clusters (same tool, tenant and payload within 90 s)"]
    for c in result.clusters:
        first = c.actions[0]
        out.append(
            f"  - {c.tool} x{len(c.actions)} for tenant {c.tenant}, payload {c.payload_hash[:12]}"
            f", first at {_clock(first.acted_at_ms)}: cause {c.cause.upper()}"
        )
        for reason in c.reasons:
            out.append(
                textwrap.fill(reason, 100, initial_indent="      ", subsequent_indent="      ")
            )
    sections = [
        ("Unknown outcomes (the action may have happened; the model was told)",
         result.unknown_outcomes, "{run_id} {kind} {tool_call_id} at {completed_at}"),
        ("Steps that neared their deadline", result.near_deadline,
         "{run_id} step {step_id}: reason {submission_reason}, {margin_s} s left of {budget_s} s"),
        ("Dead letters", result.dead_letters, "{at} {kind} run {run_id}: {reason}"),
        ("Client resubmissions", result.resubmissions,
         "{at} {shape}: run {run_id} (original {original}) on thread {thread_id}"),
    ]  # fmt: skip
    for title, rows, pattern in sections:
        if rows:
            out += ["", title]
            for row in rows:
                shown = {k: _at(v) if isinstance(v, datetime) else _num(v) for k, v in row.items()}
                out.append("  - " + pattern.format(**shown))
    return "\n".join(out)


def _num(value: Any) -> Any:
    return f"{value:.1f}" if isinstance(value, float) else value
