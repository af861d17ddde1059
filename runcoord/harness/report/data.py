"""What a replay leaves behind, one folder per system, and what the report reads back.

<replay dir>/replay.json          the protocol: trace, plan, rate, replicas, thresholds
<replay dir>/trace.jsonl          the trace replayed (a copy)
<replay dir>/<system>/runs.jsonl  every run sent: run id, turn, sent/finished times, status
<replay dir>/<system>/audit.jsonl the gateway's audit rows (the ground truth)
<replay dir>/<system>/sim_records.json   the simulated provider's records
<replay dir>/<system>/faults.jsonl       each fault action, when it fired, and how it went
<replay dir>/<system>/timeline.jsonl     once a second: sent, finished, in flight
<replay dir>/<system>/gateway_arrivals.jsonl  when each tool request reached the gateway
<replay dir>/<system>/system.json        CPU per process, Redis ops, timings
<replay dir>/<system>/journal.jsonl, intents.jsonl, dlq.jsonl, ledger.jsonl,
    sandbox_audit.jsonl, evidence.json   what explains a run once the replay's topics and
    database are gone (runcoord/forensics/evidence.py; the journal and ledger: runcoord only)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runcoord.domain.events import JournalEvent
from runcoord.forensics import evidence
from runcoord.harness.workload.trace import TraceTurn, read_trace

# The journal events the report reads (why a write is missing: report/missing.py).
REPORT_EVENTS = frozenset(
    {
        "RunAccepted",
        "StepOpened",
        "ToolOutputRecorded",
        "RunFinished",
        "ApprovalRequested",  # report/approvals.py
        "ApprovalDecided",
    }
)


@dataclass
class RunRecord:
    """One run the replay sent: an original turn, or a client resubmission of one."""

    run_id: str
    turn_id: str
    tenant: str
    conversation: str
    resubmission: bool
    sent_at: float  # unix seconds
    finished_at: float | None = None  # when the system under test reported it terminal
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AuditRow:
    tool: str
    tenant: str
    run_id: str | None
    tool_call_id: str | None
    payload_hash: str
    idempotency_key: str | None
    acted_at: float  # unix seconds


@dataclass
class SystemData:
    """Everything the report needs about one system's replay."""

    system: str
    runs: list[RunRecord]
    audit: list[AuditRow]
    sim_records: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # system.json
    # The system's journal by run (REPORT_EVENTS only) and its effect ledger's rows; None when
    # the replay saved none (the baseline has neither).
    journal: dict[str, list[JournalEvent]] | None = None
    ledger: list[dict[str, Any]] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # evidence.json
    # When each tool request reached the gateway (gateway_arrivals.jsonl; reads included).
    arrivals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReplayData:
    protocol: dict[str, Any]
    trace: dict[str, TraceTurn]  # by turn id
    systems: dict[str, SystemData]


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            data = asdict(row) if hasattr(row, "__dataclass_fields__") else row
            out.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as source:
        return [json.loads(line) for line in source if line.strip()]


def load_system(folder: Path) -> SystemData:
    info_path = folder / "system.json"
    records_path = folder / "sim_records.json"
    manifest = folder / evidence.MANIFEST
    return SystemData(
        system=folder.name,
        runs=[RunRecord(**r) for r in read_jsonl(folder / "runs.jsonl")],
        audit=[AuditRow(**r) for r in read_jsonl(folder / "audit.jsonl")],
        sim_records=json.loads(records_path.read_text()) if records_path.exists() else {},
        faults=read_jsonl(folder / "faults.jsonl"),
        timeline=read_jsonl(folder / "timeline.jsonl"),
        info=json.loads(info_path.read_text()) if info_path.exists() else {},
        journal=evidence.events_by_run(folder, REPORT_EVENTS)
        if evidence.has_journal(folder)
        else None,
        ledger=evidence.read_ledger(folder) if (folder / evidence.LEDGER).exists() else None,
        evidence=json.loads(manifest.read_text()) if manifest.exists() else {},
        arrivals=read_jsonl(folder / "gateway_arrivals.jsonl"),
    )


def load_replay(folder: Path) -> ReplayData:
    protocol = json.loads((folder / "replay.json").read_text())
    trace = {t.turn_id: t for t in read_trace(folder / "trace.jsonl")}
    systems = {
        name: load_system(folder / name)
        for name in protocol.get("systems", [])
        if (folder / name / "runs.jsonl").exists()
    }
    return ReplayData(protocol, trace, systems)


def latest_replay(root: Path) -> Path | None:
    """The newest replay folder under ``root`` (folders named by start time sort by age)."""
    found = sorted(p.parent for p in root.glob("*/replay.json"))
    return found[-1] if found else None
