"""Write actions: expected (from the trace) against observed (the gateway's audit log), and
duplicate-like clusters with their causes.

A cluster is two or more audit rows with the same tool, tenant and payload hash, each within
``window_s`` of the one before. Its first row is the action someone asked for; every further
row gets a cause:

- ``system_duplicate``: the run had already done this as often as its script asks: the
  coordinator (or its HTTP layer) did it again;
- ``client_resubmission``: a run the client sent again (the same turn resubmitted);
- ``legitimate_repeat``: another turn's script asks for the same action (the trace planted it);
- ``unknown``: the row names no run of this replay.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runcoord.forensics.clusters import CAUSES, gravest, within_window
from runcoord.harness.report.data import AuditRow, RunRecord
from runcoord.harness.workload.trace import TraceTurn


def payload_hash(body: Any) -> str:
    """The gateway's payload hash: sha256 of canonical JSON (runcoord/sim/tools/store.py)."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def expected_calls(
    turn: TraceTurn, write_tools: Mapping[str, frozenset[str]]
) -> Counter[tuple[str, str]]:
    """(tool, payload hash) -> how many times this turn's script makes that write.

    ``write_tools`` maps each write tool to the tenants it is enabled for: a write the
    tenant may not make is answered with an error output, so it is expected to never act.
    """
    out: Counter[tuple[str, str]] = Counter()
    for call in turn.script.calls():
        tenants = write_tools.get(call.name)
        if call.approval is not None and call.approval.decision != "approve":
            continue  # the approver rejects it, or never decides: it must not act
        if tenants is not None and turn.tenant in tenants:
            out[(call.name, payload_hash(call.arguments))] += 1
    return out


@dataclass
class Cluster:
    tool: str
    tenant: str
    payload_hash: str
    rows: list[AuditRow]
    causes: list[str] = field(default_factory=list)  # one per row after the first

    @property
    def cause(self) -> str:
        return gravest(self.causes)


@dataclass
class WriteFigures:
    expected_writes: int
    observed_writes: int
    missing_writes: int  # expected (run, tool, payload) actions that never happened
    excess_writes: int  # actions beyond what the runs' scripts asked for
    write_turns: int  # runs whose script makes at least one write
    clusters: list[Cluster]
    # Per run: (tool, payload hash) -> how many the script asks for / how many never happened.
    expected_by_run: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)
    missing_by_run: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.observed_writes / self.expected_writes if self.expected_writes else None

    def rows_by_cause(self) -> dict[str, int]:
        counts = Counter(c for cluster in self.clusters for c in cluster.causes)
        return {cause: counts.get(cause, 0) for cause in CAUSES}

    def clusters_by_cause(self) -> dict[str, int]:
        counts = Counter(cluster.cause for cluster in self.clusters)
        return {cause: counts.get(cause, 0) for cause in CAUSES}


def find_clusters(rows: Sequence[AuditRow], window_s: float) -> list[Cluster]:
    return [
        Cluster(tool, tenant, phash, members)
        for (tool, tenant, phash), members in within_window(
            rows,
            key=lambda r: (r.tool, r.tenant, r.payload_hash),
            at=lambda r: r.acted_at,
            window=window_s,
        )
    ]


def attribute(
    cluster: Cluster,
    runs: Mapping[str, RunRecord],
    expected: Mapping[str, Counter[tuple[str, str]]],
) -> None:
    """Give every row after the cluster's first a cause (see the module's docstring)."""
    key = (cluster.tool, cluster.payload_hash)
    done: Counter[str] = Counter()  # rows seen so far, per run
    turns_seen: set[str] = set()
    causes: list[str] = []
    for position, row in enumerate(cluster.rows):
        run = runs.get(row.run_id or "")
        if run is None:
            cause = "unknown"
        elif done[run.run_id] >= expected.get(run.run_id, Counter())[key]:
            cause = "system_duplicate"
        elif run.turn_id in turns_seen and run.resubmission:
            cause = "client_resubmission"
        else:
            cause = "legitimate_repeat"
        if run is not None:
            done[run.run_id] += 1
            turns_seen.add(run.turn_id)
        if position:
            causes.append(cause)
    cluster.causes = causes


def write_figures(
    runs: Sequence[RunRecord],
    audit: Sequence[AuditRow],
    trace: Mapping[str, TraceTurn],
    write_tools: Mapping[str, frozenset[str]],
    window_s: float = 90.0,
) -> WriteFigures:
    by_id = {r.run_id: r for r in runs}
    expected = {r.run_id: expected_calls(trace[r.turn_id], write_tools) for r in runs}
    observed: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for row in audit:
        if row.run_id in by_id:
            observed[row.run_id][(row.tool, row.payload_hash)] += 1
    missing = excess = 0
    missing_by_run: dict[str, Counter[tuple[str, str]]] = {}
    for run_id in by_id:
        want, got = expected[run_id], observed.get(run_id, Counter())
        lacking = Counter({k: n - got[k] for k, n in want.items() if n > got[k]})
        if lacking:
            missing_by_run[run_id] = lacking
        missing += sum(lacking.values())
        excess += sum(max(0, n - want[k]) for k, n in got.items())
    excess += sum(1 for row in audit if row.run_id not in by_id)
    clusters = find_clusters(audit, window_s)
    for cluster in clusters:
        attribute(cluster, by_id, expected)
    return WriteFigures(
        expected_writes=sum(sum(c.values()) for c in expected.values()),
        observed_writes=len(audit),
        missing_writes=missing,
        excess_writes=excess,
        write_turns=sum(1 for c in expected.values() if c),
        clusters=clusters,
        expected_by_run=expected,
        missing_by_run=missing_by_run,
    )
