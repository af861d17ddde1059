"""Approvals through the agent API, on the whole product (simulated provider, sandbox gateway,
coordinator, executors, API, relay, projector), for both provider protocols.

charge_card over 100.00 waits for a person (the module's tools.yaml). An approver's approve
makes exactly one action in the sandbox's audit (its ground truth) and the run completes; a
reject makes none and the model reads "rejected by NAME: reason"; nobody deciding makes none
and the model reads "not approved in time" at the deadline. Two approvers racing get one
decision recorded and one 409; a key without the approver role gets 403, another tenant 404.

One stack for the module: the approval budget is short (BUDGET_MS) so the deadline test is
quick, and the others decide well within it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from runcoord.api import tenants
from runcoord.api.keys import create
from runcoord.stack.polling import wait_until
from runcoord.topics import TopicSpec
from tests.integration.e2e import SDK_WARNINGS, Stack, product_with_approvals, script

pytestmark = [pytest.mark.integration, *SDK_WARNINGS]

BUDGET_MS = 12_000
PROTOCOLS = ["assistants", "responses"]


@dataclass
class World:
    stack: Stack
    tenant: str
    alice: str  # approver keys of the tenant
    bob: str
    plain: str  # the tenant's key without a role
    other: str  # an approver of another tenant

    def http(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.stack.api}{path}", headers=headers, timeout=30, **kwargs
        )

    def turn(self, protocol: str, amount_cents: int = 25_000) -> str:
        assistant = self.stack.assistant_id if protocol == "assistants" else "sim-1"
        turn = script([("charge_card", {"customer_id": "C-7", "amount_cents": amount_cents})])
        answer = self.http(
            "POST",
            f"/v1/threads/th-{uuid.uuid4().hex[:8]}/turns",
            self.plain,
            json={
                "input": "charge the customer",
                "provider": protocol,
                "assistant_id": assistant,
                "metadata": {"sim_script": json.dumps(turn)},
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["run_id"])

    def pending(self, run_id: str) -> dict[str, Any]:
        """The run's approval request, once it is projected."""
        found: list[dict[str, Any]] = []

        def listed() -> str | None:
            answer = self.http("GET", "/v1/approvals", self.plain)
            assert answer.status_code == 200, answer.text
            found[:] = [a for a in answer.json()["approvals"] if a["run_id"] == run_id]
            return None if found else "not listed yet"

        wait_until(listed, timeout=60, what=f"the approval request of {run_id}")
        return found[0]

    def decide(self, key: str, approval_id: str, decision: str, reason: str = "") -> httpx.Response:
        return self.http(
            "POST",
            f"/v1/approvals/{approval_id}",
            key,
            json={"decision": decision, "reason": reason},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )

    def finished(self, run_id: str) -> tuple[str, str]:
        return self.stack.wait_finished({run_id}, timeout=90)[run_id]

    def actions(self, run_id: str) -> list[dict[str, Any]]:
        """The sandbox's audit rows of the run: what was really done."""
        rows = httpx.get(f"{self.stack.gateway}/_sim/audit", params={"run_id": run_id}).json()
        return list(rows["rows"])

    def output(self, run_id: str, tool_call_id: str) -> dict[str, Any]:
        """The output the model was given for the call (the journal's ToolOutputRecorded)."""
        return dict(json.loads(self.stack.outputs[(run_id, tool_call_id)]))

    def events(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The run's SSE stream, once the run is projected as finished."""

        def projected() -> str | None:
            status = self.http("GET", f"/v1/runs/{run_id}", self.plain).json().get("status")
            return None if status == "completed" else f"status {status}"

        wait_until(projected, timeout=60, what=f"{run_id} projected as completed")
        answer = self.http("GET", f"/v1/runs/{run_id}/events", self.plain, params={"follow": False})
        out = []
        for frame in answer.text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
            if "event" in fields:
                out.append((fields["event"], json.loads(fields["data"])))
        return out


@pytest.fixture(scope="module")
def world(
    bootstrap: str,
    pg_dsn: str,
    topic_specs: list[TopicSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("approvals")
    with product_with_approvals(bootstrap, pg_dsn, topic_specs, folder, BUDGET_MS) as stack:
        tag = uuid.uuid4().hex[:8]
        tenant, other = f"ta-{tag}", f"tb-{tag}"
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for assistant in (stack.assistant_id, "sim-1"):
                tenants.allow(conn, tenant, assistant)
            yield World(
                stack,
                tenant,
                alice=create(conn, tenant, name="alice", role="approver"),
                bob=create(conn, tenant, name="bob", role="approver"),
                plain=create(conn, tenant),
                other=create(conn, other, name="carol", role="approver"),
            )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_approved_call_acts_once_and_the_run_completes(world: World, protocol: str) -> None:
    run_id = world.turn(protocol)
    request = world.pending(run_id)
    assert (request["tool"], request["status"]) == ("charge_card", "pending")
    shown = world.http("GET", f"/v1/approvals/{request['approval_id']}", world.plain).json()
    assert json.loads(shown["arguments"]) == {"customer_id": "C-7", "amount_cents": 25_000}
    assert world.actions(run_id) == []  # held, not dispatched

    first = world.decide(world.alice, request["approval_id"], "approve", "known customer")
    assert first.status_code == 202, first.text
    assert (first.json()["approver"], first.json()["replayed"]) == ("alice", False)
    again = world.decide(world.alice, request["approval_id"], "approve", "known customer")
    assert again.status_code == 200 and again.json()["replayed"] is True

    assert world.finished(run_id) == ("completed", "")
    rows = world.actions(run_id)
    assert [(r["tool"], r["tool_call_id"]) for r in rows] == [
        ("charge_card", request["tool_call_id"])
    ]
    decided = world.http("GET", f"/v1/approvals/{request['approval_id']}", world.plain).json()
    assert (decided["status"], decided["approver"]) == ("approve", "alice")

    events = world.events(run_id)
    names = [name for name, _ in events]
    assert names.index("ApprovalRequested") < names.index("ApprovalDecided")
    asked = next(data for name, data in events if name == "ApprovalRequested")
    assert asked["approval"]["approval_id"] == request["approval_id"]
    assert asked["approval"]["tool"] == "charge_card"
    told = next(data for name, data in events if name == "ApprovalDecided")
    assert (told["decision"], told["approver"], told["reason"]) == (
        "approve",
        "alice",
        "known customer",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_rejected_call_never_acts_and_the_model_reads_why(world: World, protocol: str) -> None:
    run_id = world.turn(protocol)
    request = world.pending(run_id)
    answer = world.decide(world.bob, request["approval_id"], "reject", "over the limit")
    assert answer.status_code == 202, answer.text

    assert world.finished(run_id) == ("completed", "")
    assert world.actions(run_id) == []
    told = world.output(run_id, request["tool_call_id"])
    assert told["error"] == {
        "type": "approval_rejected",
        "message": "rejected by bob: over the limit",
    }
    # A later different decision is refused with the one that stands.
    late = world.decide(world.alice, request["approval_id"], "approve")
    assert late.status_code == 409, late.text
    assert late.json()["recorded"]["decision"] == "reject"
    assert late.json()["recorded"]["approver"] == "bob"


def test_undecided_calls_get_the_error_at_the_deadline(world: World) -> None:
    runs = {protocol: world.turn(protocol) for protocol in PROTOCOLS}
    requests = {p: world.pending(run_id) for p, run_id in runs.items()}
    for protocol, run_id in runs.items():
        assert world.finished(run_id) == ("completed", ""), protocol
        assert world.actions(run_id) == []
        told = world.output(run_id, requests[protocol]["tool_call_id"])
        assert told["error"] == {"type": "approval_expired", "message": "not approved in time"}

    approval_id = requests["assistants"]["approval_id"]

    def expired() -> str | None:
        shown = world.http("GET", f"/v1/approvals/{approval_id}", world.plain).json()
        return None if shown["status"] == "expired" else f"status {shown['status']}"

    wait_until(expired, timeout=60, what="the expiry projected")
    listed = world.http("GET", "/v1/approvals", world.plain, params={"status": "expired"}).json()
    assert approval_id in {a["approval_id"] for a in listed["approvals"]}
    # Too late: the system's decision stands, and says so.
    late = world.decide(world.alice, approval_id, "approve")
    assert late.status_code == 409, late.text
    assert late.json()["recorded"] == {
        "decision": "expired",
        "reason": "not approved in time",
        "approver": "runcoord",
        "decided_at": late.json()["recorded"]["decided_at"],
    }


def test_two_approvers_racing_get_one_decision_and_one_409(world: World, pg_dsn: str) -> None:
    run_id = world.turn("assistants")
    approval_id = world.pending(run_id)["approval_id"]
    start = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def post(who: str, key: str, decision: str) -> None:
        start.wait(10)
        answers[who] = world.decide(key, approval_id, decision, f"{who} says {decision}")

    threads = [
        threading.Thread(target=post, args=("alice", world.alice, "approve")),
        threading.Thread(target=post, args=("bob", world.bob, "reject")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(a.status_code for a in answers.values())
    assert codes == [202, 409], {w: a.text for w, a in answers.items()}
    winner = next(w for w, a in answers.items() if a.status_code == 202)
    loser = next(a for a in answers.values() if a.status_code == 409)
    assert loser.json()["recorded"]["approver"] == winner

    with psycopg.connect(pg_dsn) as conn:
        sent = conn.execute(
            "SELECT count(*) FROM api_outbox WHERE record_key = %s "
            "AND record_name = 'ApprovalDecision'",
            (run_id.encode(),),
        ).fetchone()
    assert sent == (1,)  # one decision on its way, whoever raced
    assert world.finished(run_id) == ("completed", "")
    acted = len(world.actions(run_id))
    assert acted == (1 if winner == "alice" else 0)


def test_only_the_tenants_approvers_decide(world: World) -> None:
    run_id = world.turn("responses")
    approval_id = world.pending(run_id)["approval_id"]
    path = f"/v1/approvals/{approval_id}"

    refused = world.decide(world.plain, approval_id, "approve")
    assert refused.status_code == 403
    assert "role" in refused.json()["detail"] and "approver" in refused.json()["detail"]
    # Another tenant's approver: as if it did not exist, for reads and decisions.
    assert world.http("GET", path, world.other).status_code == 404
    assert world.decide(world.other, approval_id, "approve").status_code == 404
    theirs = world.http("GET", "/v1/approvals", world.other).json()["approvals"]
    assert approval_id not in {a["approval_id"] for a in theirs}
    missing = world.decide(world.alice, "apr_" + "0" * 32, "approve")
    assert missing.status_code == 404 and "not projected yet" in missing.json()["detail"]
    assert world.decide(world.alice, approval_id, "maybe").status_code == 422
    unkeyed = world.http("POST", path, world.alice, json={"decision": "approve"})
    assert unkeyed.status_code == 422
    assert world.http("GET", path, world.plain).json()["status"] == "pending"

    # The same Idempotency-Key and body again: the decision made once, replayed.
    once = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"decision": "approve", "reason": "fine"}
    first = world.http("POST", path, world.alice, json=body, headers=once)
    assert first.status_code == 202, first.text
    again = world.http("POST", path, world.alice, json=body, headers=once)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.headers["Idempotent-Replayed"] == "true"
    assert world.finished(run_id) == ("completed", "")
    assert len(world.actions(run_id)) == 1


def test_a_decision_in_flight_survives_kill_9_of_the_relay_api_and_coordinator(
    world: World,
) -> None:
    """The approver decides while the relay and the coordinator are dead, then the API dies
    too (-9): the decision was committed with its outbox row, so once they are back it is
    applied, exactly once, and the call acts exactly once."""
    procs = world.stack.procs
    run_id = world.turn("assistants")
    request = world.pending(run_id)
    for name in ("relay", "coordinator"):
        procs[name].kill9()
    answer = world.decide(world.alice, request["approval_id"], "approve", "while down")
    assert answer.status_code == 202, answer.text
    procs["api"].kill9()
    for name in ("api", "relay", "coordinator"):
        procs[name].start()
    procs["api"].wait_http(f"{world.stack.api}/healthz")
    assert world.finished(run_id) == ("completed", "")
    assert len(world.actions(run_id)) == 1
    again = world.decide(world.alice, request["approval_id"], "approve", "while down")
    assert again.status_code == 200 and again.json()["replayed"] is True
