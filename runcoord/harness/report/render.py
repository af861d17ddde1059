"""The report in the terminal: one table, a column per system compared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from runcoord.harness.report.hops import HOPS
from runcoord.harness.report.missing import CAUSES, UNEXPLAINED

Fmt = Callable[[Any], str]


def _num(digits: int) -> Fmt:
    return lambda v: "-" if v is None else f"{v:.{digits}f}"


def _int(v: Any) -> str:
    return "-" if v is None else f"{v:,}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2%}"


ROWS: list[tuple[str, str, Fmt]] = [
    ("turns sent (+ client resubmissions)", "turns_sent", _int),
    ("client resubmissions", "resubmissions_sent", _int),
    ("terminal rate (<= 120 s, system's report)", "terminal_rate", _pct),
    ("provider shows run ended", "provider_terminal_rate", _pct),
    ("provider runs per turn", "provider_runs_per_run", _num(3)),
    ("steps needing outputs", "steps", _int),
    ("no-stall rate (< 5 s in requires_action)", "no_stall_rate", _pct),
    ("coordinator stalls (unanswered >= budget)", "coordinator_stalls", _int),
    ("steps still waiting at the end (< budget)", "unresolved_steps", _int),
    ("median model steps per turn", "median_steps_per_turn", _num(1)),
    ("submission success", "submission_success", _pct),
    ("submission attempts per step", "attempts_per_step", _num(3)),
    ("time in requires_action p50 (ms)", "step_wait_p50_ms", _num(0)),
    ("time in requires_action p99 (ms)", "step_wait_p99_ms", _num(0)),
    ("turn latency p50 (s)", "p50_turn_s", _num(2)),
    ("turn latency p95 (s)", "p95_turn_s", _num(2)),
    ("turn latency p99 (s)", "p99_turn_s", _num(2)),
    ("coordinator-added p50 (ms)", "coordinator_added_p50_ms", _num(0)),
    ("coordinator-added p99 (ms)", "coordinator_added_p99_ms", _num(0)),
    ("expected write actions", "expected_writes", _int),
    ("observed write actions (audit log)", "observed_writes", _int),
    ("observed / expected", "observed_expected_ratio", _num(3)),
    ("missing writes", "missing_writes", _int),
    ("duplicate-like clusters", "duplicate_clusters", _int),
    ("system duplicates (extra actions)", "system_duplicates", _int),
    ("system duplicates per 10k write-turns", "system_duplicates_per_10k_write_turns", _num(1)),
    ("Redis ops per turn", "redis_ops_per_turn", _num(1)),
    ("faults fired", "faults_fired", _int),
    ("writes without approval", "writes_without_approval", _int),
    ("writes after reject or expiry", "writes_after_reject", _int),
]
# Under "writes after reject": the approvals asked and decided (report/approvals.py).
APPROVAL_ROWS = [
    ("  approvals requested", "requested"),
    ("  approved", "approved"),
    ("  rejected", "rejected"),
    ("  expired (no decision in time)", "expired"),
    ("  time to decision p50 (ms)", "decision_p50_ms"),
]


def missing_causes(report: dict[str, Any]) -> list[str]:
    """The causes of missing writes any system has, in CAUSES order; always ``unexplained``."""
    seen = {
        cause
        for figures in report["systems"].values()
        for cause, n in (figures.get("missing_writes_by_cause") or {}).items()
        if n
    } | {UNEXPLAINED}
    return [c for c in CAUSES if c in seen] + sorted(seen - set(CAUSES))


def cause_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """One row per cause of missing writes: the count per system ("-" without attribution)."""
    systems = report["systems"]
    rows = []
    for cause in missing_causes(report):
        values = []
        for name in systems:
            by_cause = systems[name].get("missing_writes_by_cause")
            values.append("-" if by_cause is None else _int(by_cause.get(cause, 0)))
        rows.append((f"  missing: {cause.replace('_', ' ')}", values))
    return rows


def hop_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """One row per hop of a tool step (report/hops.py): "p50 / p99" ms per system, "-" for
    a system without a journal. Empty when no system has hops."""
    systems = report["systems"]
    if not any(f.get("step_hops_ms") for f in systems.values()):
        return []
    rows = []
    for hop in HOPS:
        values = []
        for name in systems:
            h = (systems[name].get("step_hops_ms") or {}).get(hop)
            values.append(
                "-" if not h or h.get("p50") is None else f"{h['p50']:.0f} / {h['p99']:.0f}"
            )
        rows.append((hop, values))
    return rows


def _keyed_rows(report: dict[str, Any], figure: str, fmt: Fmt) -> list[tuple[str, list[str]]]:
    """One row per key of a figure that maps names to numbers, over every system ("-" where
    a system has no such key)."""
    systems = report["systems"]
    keys = sorted({k for f in systems.values() for k in (f.get(figure) or {})})
    return [(k, [fmt((systems[n].get(figure) or {}).get(k)) for n in systems]) for k in keys]


def cpu_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """CPU ms per turn, one row per process of any system."""
    return _keyed_rows(report, "cpu_ms_per_turn", _num(1))


def request_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Requests the simulated provider answered per turn, one row per method and route."""
    return _keyed_rows(report, "provider_requests_per_turn", _num(2))


def table(report: dict[str, Any]) -> Table:
    systems = report["systems"]
    protocol = report["protocol"]
    title = (
        f"runcoord replay: {protocol.get('turns')} turns, plan {protocol.get('plan')}, "
        f"{protocol.get('provider')} API, {protocol.get('rate')} turns/s, "
        f"runcoord's tools over {protocol.get('tools_via', 'http')}"
    )
    out = Table(title=title, title_justify="left")
    out.add_column("figure")
    for name in systems:
        out.add_column(name, justify="right")
    for label, key, fmt in ROWS:
        out.add_row(label, *(fmt(systems[name].get(key)) for name in systems))
        if key == "missing_writes":
            for cause_label, values in cause_rows(report):
                out.add_row(cause_label, *values)
        if key == "writes_after_reject":
            for label_, field in APPROVAL_ROWS:
                counts = [(systems[n].get("approvals") or {}).get(field) for n in systems]
                if any(v is not None for v in counts):
                    out.add_row(label_, *(_int(v) for v in counts))
    for cause in ("client_resubmission", "legitimate_repeat", "unknown"):
        out.add_row(
            f"clusters: {cause.replace('_', ' ')}",
            *(_int(systems[n]["clusters_by_cause"].get(cause)) for n in systems),
        )
    out.add_row(
        "CPU seconds (all processes)",
        *(_num(1)(sum(systems[n].get("cpu_s", {}).values()) or None) for n in systems),
    )
    return out


def _small_table(title: str, first: str, report: dict[str, Any], rows: Any) -> Table:
    out = Table(title=title, title_justify="left")
    out.add_column(first)
    for name in report["systems"]:
        out.add_column(name, justify="right")
    for label, values in rows:
        out.add_row(label, *values)
    return out


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(report))
    hops = hop_rows(report)
    if hops:
        title = "where a tool step's time goes, p50 / p99 ms"
        console.print(_small_table(title, "hop", report, hops))
    cpu = cpu_rows(report)
    if cpu:
        console.print(_small_table("CPU ms per turn", "process", report, cpu))
    requests = request_rows(report)
    if requests:
        console.print(_small_table("provider requests per turn", "request", report, requests))
    for name, figures in report["systems"].items():
        if figures.get("missing_writes_note"):
            console.print(f"{name}, missing writes: {figures['missing_writes_note']}")
        for part, error in (figures.get("evidence_errors") or {}).items():
            console.print(f"{name}, evidence {part} not saved: {error}")
