"""Duplicate-like clusters in the gateway's audit log, and the cause of each repeat.

A cluster is two or more actions of the same tool, tenant and payload hash, each within the
window (90 s) of the one before. Its first action is what someone asked for; every later one
gets a cause, judged from the run projection (no workload trace is needed, unlike the
evaluation harness, which knows what each turn's script asked for):

- ``system_duplicate``: the same tool call acted again (same idempotency key, or same run and
  tool_call_id): our side did it twice. G1 says this never happens.
- ``client_resubmission``: another run repeating an earlier run's input on the same thread:
  the client sent the turn again (a new run) instead of retrying with its idempotency key.
- ``legitimate_repeat``: a different tool call asked for it (the model asked twice in one run,
  or another turn asked for the same thing).
- ``unknown``: the action names no run this journal knows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Gravest first: a cluster's cause is the gravest of its repeats' causes.
CAUSES = ("system_duplicate", "client_resubmission", "legitimate_repeat", "unknown")
WINDOW_MS = 90_000


@dataclass(frozen=True, slots=True)
class Action:
    audit_id: int
    tool: str
    tenant: str
    payload_hash: str
    run_id: str | None
    tool_call_id: str | None
    idempotency_key: str | None
    acted_at_ms: int


@dataclass(frozen=True, slots=True)
class RunLink:
    """What the projection knows of a run, as far as attributing a repeat needs."""

    run_id: str
    thread_id: str
    input_hash: str
    resubmission_of: str | None


@dataclass
class Cluster:
    tool: str
    tenant: str
    payload_hash: str
    actions: list[Action]
    causes: list[str] = field(default_factory=list)  # one per action after the first
    reasons: list[str] = field(default_factory=list)

    @property
    def cause(self) -> str:
        for cause in CAUSES:
            if cause in self.causes:
                return cause
        return "legitimate_repeat"


def find_clusters(actions: Sequence[Action], window_ms: int = WINDOW_MS) -> list[Cluster]:
    groups: dict[tuple[str, str, str], list[Action]] = defaultdict(list)
    for a in actions:
        groups[(a.tool, a.tenant, a.payload_hash)].append(a)
    clusters: list[Cluster] = []
    for (tool, tenant, phash), members in groups.items():
        members.sort(key=lambda a: (a.acted_at_ms, a.audit_id))
        current = [members[0]]
        for a in members[1:]:
            if a.acted_at_ms - current[-1].acted_at_ms <= window_ms:
                current.append(a)
                continue
            if len(current) > 1:
                clusters.append(Cluster(tool, tenant, phash, current))
            current = [a]
        if len(current) > 1:
            clusters.append(Cluster(tool, tenant, phash, current))
    clusters.sort(key=lambda c: c.actions[0].acted_at_ms)
    return clusters


def _resubmits(run: RunLink, earlier: RunLink, runs: Mapping[str, RunLink]) -> bool:
    if run.thread_id == earlier.thread_id and run.input_hash == earlier.input_hash:
        return True
    seen: set[str] = set()
    ancestor = run.resubmission_of
    while ancestor is not None and ancestor not in seen:
        if ancestor == earlier.run_id:
            return True
        seen.add(ancestor)
        link = runs.get(ancestor)
        ancestor = link.resubmission_of if link else None
    return False


def _cause(a: Action, before: Sequence[Action], runs: Mapping[str, RunLink]) -> tuple[str, str]:
    for b in before:
        same_key = a.idempotency_key is not None and a.idempotency_key == b.idempotency_key
        same_call = a.run_id == b.run_id and a.tool_call_id == b.tool_call_id
        if same_key or (a.run_id is not None and same_call):
            return (
                "system_duplicate",
                f"run {a.run_id} call {a.tool_call_id} acted again "
                f"(audit #{b.audit_id} then #{a.audit_id})",
            )
    run = runs.get(a.run_id or "")
    if run is None:
        return "unknown", f"audit #{a.audit_id} names no run this journal knows ({a.run_id})"
    for b in before:
        other = runs.get(b.run_id or "")
        if other is not None and other.run_id != run.run_id and _resubmits(run, other, runs):
            return (
                "client_resubmission",
                f"run {run.run_id} repeats run {other.run_id}'s input on thread {run.thread_id}: "
                "the client sent the turn again",
            )
    if any(b.run_id == a.run_id for b in before):
        return (
            "legitimate_repeat",
            f"run {a.run_id} asked for it again in another tool call ({a.tool_call_id})",
        )
    return "legitimate_repeat", f"run {a.run_id} is a different turn asking for the same action"


def attribute(cluster: Cluster, runs: Mapping[str, RunLink]) -> Cluster:
    """Give every action after the cluster's first a cause and a reason."""
    cluster.causes, cluster.reasons = [], []
    for i, a in enumerate(cluster.actions[1:], start=1):
        cause, reason = _cause(a, cluster.actions[:i], runs)
        cluster.causes.append(cause)
        cluster.reasons.append(reason)
    return cluster
