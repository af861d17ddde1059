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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

# Gravest first: a cluster's cause is the gravest of its repeats' causes.
CAUSES = ("system_duplicate", "client_resubmission", "legitimate_repeat", "unknown")
WINDOW_MS = 90_000

T = TypeVar("T")
K = TypeVar("K")


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
        return gravest(self.causes)


def within_window(
    items: Iterable[T], key: Callable[[T], K], at: Callable[[T], float], window: float
) -> list[tuple[K, list[T]]]:
    """Items with the same key, each within ``window`` of the one before, in groups of two
    or more, earliest group first (a stable sort: ties keep the items' order). The one
    clustering rule, shared with the harness report."""
    groups: dict[K, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    found: list[tuple[K, list[T]]] = []
    for k, members in groups.items():
        members.sort(key=at)
        current = [members[0]]
        for item in members[1:]:
            if at(item) - at(current[-1]) <= window:
                current.append(item)
                continue
            if len(current) > 1:
                found.append((k, current))
            current = [item]
        if len(current) > 1:
            found.append((k, current))
    found.sort(key=lambda group: at(group[1][0]))
    return found


def gravest(causes: Iterable[str]) -> str:
    """A cluster's cause: the gravest of its repeats' causes."""
    present = set(causes)
    return next((cause for cause in CAUSES if cause in present), "legitimate_repeat")


def find_clusters(actions: Sequence[Action], window_ms: int = WINDOW_MS) -> list[Cluster]:
    return [
        Cluster(tool, tenant, phash, members)
        for (tool, tenant, phash), members in within_window(
            sorted(actions, key=lambda a: a.audit_id),  # ties in time: audit order
            key=lambda a: (a.tool, a.tenant, a.payload_hash),
            at=lambda a: a.acted_at_ms,
            window=window_ms,
        )
    ]


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
