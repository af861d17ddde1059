"""The sandbox tool gateway over real HTTP (the real `runcoord sim tools` process) against real
PostgreSQL. The audit rows are what the evaluation counts, so every test asserts on them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from runcoord import db

pytestmark = pytest.mark.integration

RUNCOORD = str(Path(sys.executable).parent / "runcoord")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gateway exited: {log.read_text()}"
        try:
            if httpx.get(f"{base}/_sim/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"gateway not healthy in time: {log.read_text()}")


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db.migrate(pg_dsn)
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "faults.yaml"
    config.write_text("seed: 42\nglobal:\n  latency: {rate: 0.0, ms: 1}\n")
    log = folder / "gateway.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                RUNCOORD,
                "sim",
                "tools",
                "--port",
                str(port),
                "--dsn",
                pg_dsn,
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, log)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=10) as c:
        yield c
        c.post("/_sim/faults", json={"seed": 42})  # close any window a test opened


@pytest.fixture
def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def call(
    client: httpx.Client,
    tool: str,
    args: dict[str, Any],
    run_id: str,
    key: str | None = None,
    tenant: str = "t1",
    timeout: float | None = None,
    token: int = 1,
    deadline_ms: int | None = None,
) -> httpx.Response:
    headers = {"X-Tenant": tenant, "X-Run-Id": run_id, "X-Tool-Call-Id": f"call-{key}"}
    if key is not None:
        headers |= {"Idempotency-Key": key, "X-Fencing-Token": str(token)}
    if deadline_ms is not None:
        headers["X-Request-Deadline"] = str(deadline_ms)
    return client.post(
        f"/tools/{tool}", json=args, headers=headers, timeout=timeout or client.timeout
    )


def audit(client: httpx.Client, run_id: str, tool: str | None = None) -> list[dict[str, Any]]:
    params = {"run_id": run_id} | ({"tool": tool} if tool else {})
    response = client.get("/_sim/audit", params=params)
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def set_faults(client: httpx.Client, faults: dict[str, Any]) -> None:
    response = client.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


WRITES = {
    "create_ticket": {"subject": "Refund not received", "customer_id": "c-1"},
    "send_email": {"to": "c-1@example.test", "subject": "About your refund"},
    "charge_card": {"customer_id": "c-1", "amount_cents": 1299, "currency": "usd"},
    "update_crm": {"customer_id": "c-1", "fields": {"status": "refunded"}},
    "post_note": {"text": "Customer called again."},
}
READS = {
    "lookup_customer": {"customer_id": "c-1"},
    "search_kb": {"query": "refund policy", "limit": 2},
    "get_order_status": {"order_id": "o-77"},
}


@pytest.mark.parametrize("tool", ["create_ticket", "send_email", "charge_card"])
def test_key_tools_act_once_per_key(client: httpx.Client, run_id: str, tool: str) -> None:
    key = uuid.uuid4().hex
    first = call(client, tool, WRITES[tool], run_id, key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = call(client, tool, WRITES[tool], run_id, key)
        assert again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
    other = call(client, tool, WRITES[tool], run_id, uuid.uuid4().hex)
    assert other.json() != first.json()
    rows = audit(client, run_id, tool)
    assert len(rows) == 2
    assert rows[0]["idempotency_key"] == key and rows[0]["fencing_token"] == 1
    assert rows[0]["run_id"] == run_id and rows[0]["tenant"] == "t1"
    assert len(rows[0]["payload_hash"]) == 64


def test_concurrent_repeats_of_one_key_act_once(gateway: str, run_id: str) -> None:
    key = uuid.uuid4().hex

    def one(_: int) -> dict[str, Any]:
        with httpx.Client(base_url=gateway, timeout=10) as c:
            response = call(c, "create_ticket", WRITES["create_ticket"], run_id, key)
            assert response.status_code == 200
            body: dict[str, Any] = response.json()
            return body

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert all(a == answers[0] for a in answers)
    with httpx.Client(base_url=gateway) as c:
        assert len(audit(c, run_id)) == 1


def test_a_key_reused_with_another_body_is_refused(client: httpx.Client, run_id: str) -> None:
    key = uuid.uuid4().hex
    assert call(client, "send_email", WRITES["send_email"], run_id, key).status_code == 200
    changed = {**WRITES["send_email"], "subject": "Something else"}
    response = call(client, "send_email", changed, run_id, key)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "idempotency_key_reused"
    assert len(audit(client, run_id)) == 1


def test_key_scope_is_per_tenant(client: httpx.Client, run_id: str) -> None:
    key = uuid.uuid4().hex
    a = call(client, "create_ticket", WRITES["create_ticket"], run_id, key, tenant="t1")
    b = call(client, "create_ticket", WRITES["create_ticket"], run_id, key, tenant="t2")
    assert a.json() != b.json()
    assert len(audit(client, run_id)) == 2


def test_update_crm_acts_per_call_and_its_lookup_finds_each_action(
    client: httpx.Client, run_id: str
) -> None:
    key = uuid.uuid4().hex
    first = call(client, "update_crm", WRITES["update_crm"], run_id, key)
    second = call(client, "update_crm", WRITES["update_crm"], run_id, key)
    assert first.status_code == second.status_code == 200
    assert first.json() != second.json(), "it does not honour keys"
    assert len(audit(client, run_id, "update_crm")) == 2
    found = client.get("/tools/update_crm/actions", params={"ref": key}, headers={"X-Tenant": "t1"})
    assert found.status_code == 200
    actions = found.json()["actions"]
    assert [a["response"] for a in actions] == [first.json(), second.json()]
    assert all(a["run_id"] == run_id for a in actions)
    elsewhere = client.get(
        "/tools/update_crm/actions", params={"ref": key}, headers={"X-Tenant": "t9"}
    )
    assert elsewhere.json()["actions"] == []
    nothing = client.get("/tools/update_crm/actions", params={"ref": uuid.uuid4().hex})
    assert nothing.json()["actions"] == []


def test_post_note_acts_per_call_and_offers_no_lookup(client: httpx.Client, run_id: str) -> None:
    key = uuid.uuid4().hex
    notes = [call(client, "post_note", WRITES["post_note"], run_id, key).json() for _ in range(3)]
    assert len({n["note_id"] for n in notes}) == 3
    assert len(audit(client, run_id, "post_note")) == 3
    assert client.get("/tools/post_note/actions", params={"ref": key}).status_code in (404, 405)


@pytest.mark.parametrize("tool", sorted(READS))
def test_read_tools_are_deterministic_and_leave_no_audit(
    client: httpx.Client, run_id: str, tool: str
) -> None:
    first = call(client, tool, READS[tool], run_id)
    second = call(client, tool, READS[tool], run_id)
    assert first.status_code == 200 and first.json() == second.json()
    assert audit(client, run_id) == []


def test_every_tool_request_is_timed_on_arrival(client: httpx.Client, run_id: str) -> None:
    """Reads too (they leave no audit row): when a tool call reached the gateway."""
    before = time.time()
    call(client, "lookup_customer", READS["lookup_customer"], run_id, key="r1")
    set_faults(client, {"global": {"error_before_act": {"rate": 1.0, "status": 502}}})
    assert call(client, "post_note", WRITES["post_note"], run_id, key="w1").status_code == 502
    set_faults(client, {})
    arrivals = client.get("/_sim/arrivals").json()["arrivals"]
    ours = [a for a in arrivals if a["run_id"] == run_id]
    assert [(a["tool"], a["tool_call_id"]) for a in ours] == [
        ("lookup_customer", "call-r1"),
        ("post_note", "call-w1"),
    ]
    assert before <= ours[0]["at"] <= ours[1]["at"] <= time.time()


def test_bad_requests_do_not_act(client: httpx.Client, run_id: str) -> None:
    assert call(client, "no_such_tool", {}, run_id).status_code == 404
    assert call(client, "charge_card", {"customer_id": "c-1"}, run_id).status_code == 422
    missing_tenant = client.post(
        "/tools/post_note", json=WRITES["post_note"], headers={"X-Run-Id": run_id}
    )
    assert missing_tenant.status_code == 400
    assert (
        client.post("/tools/post_note", content=b"[1]", headers={"X-Tenant": "t1"}).status_code
        == 400
    )
    assert audit(client, run_id) == []


# ---- fault knobs ---------------------------------------------------------------------------


def test_slow_success_acts_then_answers_after_the_callers_timeout(
    client: httpx.Client, run_id: str
) -> None:
    set_faults(client, {"tools": {"create_ticket": {"slow_success": {"rate": 1.0, "ms": 3000}}}})
    key = uuid.uuid4().hex
    with pytest.raises(httpx.ReadTimeout):
        call(client, "create_ticket", WRITES["create_ticket"], run_id, key, timeout=0.5)
    rows = audit(client, run_id)
    assert len(rows) == 1, "the tool acted although the caller saw a timeout"
    # The incident's fix: retry with the same key. A replay does not act, so it is not slow.
    retry = call(client, "create_ticket", WRITES["create_ticket"], run_id, key, timeout=2)
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["ticket_id"] == f"TCK-{rows[0]['id']:07d}"
    assert len(audit(client, run_id)) == 1


def test_drop_after_act_acts_then_closes_the_connection(client: httpx.Client, run_id: str) -> None:
    set_faults(client, {"global": {"drop_after_act": {"rate": 1.0}}})
    with pytest.raises(httpx.TransportError) as caught:
        call(client, "post_note", WRITES["post_note"], run_id, uuid.uuid4().hex)
    assert not isinstance(caught.value, httpx.TimeoutException)
    assert len(audit(client, run_id, "post_note")) == 1
    set_faults(client, {})
    assert call(client, "post_note", WRITES["post_note"], run_id).status_code == 200


def test_error_before_act_does_not_act(client: httpx.Client, run_id: str) -> None:
    set_faults(client, {"global": {"error_before_act": {"rate": 1.0, "status": 502}}})
    key = uuid.uuid4().hex
    for tool in WRITES:
        response = call(client, tool, WRITES[tool], run_id, key)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "injected_fault"
    assert audit(client, run_id) == []
    set_faults(client, {})
    assert call(client, "charge_card", WRITES["charge_card"], run_id, key).status_code == 200
    assert len(audit(client, run_id)) == 1


def test_a_per_tool_knob_overrides_the_global_one(client: httpx.Client, run_id: str) -> None:
    set_faults(
        client,
        {
            "global": {"error_before_act": {"rate": 1.0}},
            "tools": {"search_kb": {"error_before_act": {"rate": 0.0}}},
        },
    )
    assert call(client, "search_kb", READS["search_kb"], run_id).status_code == 200
    assert call(client, "lookup_customer", READS["lookup_customer"], run_id).status_code == 503


def test_latency_spike_holds_the_request(client: httpx.Client, run_id: str) -> None:
    set_faults(client, {"tools": {"get_order_status": {"latency": {"rate": 1.0, "ms": 300}}}})
    started = time.monotonic()
    assert call(client, "get_order_status", READS["get_order_status"], run_id).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_draws_repeat_for_the_same_seed(client: httpx.Client, run_id: str) -> None:
    faults = {"seed": 7, "global": {"error_before_act": {"rate": 0.5}}}

    def fates() -> list[int]:
        set_faults(client, faults)  # setting faults restarts the delivery counts
        return [
            call(
                client, "lookup_customer", {"customer_id": f"c-{i}"}, run_id, f"k-{i % 5}"
            ).status_code
            for i in range(20)
        ]

    first = fates()
    assert set(first) == {200, 503}
    assert fates() == first
    report = client.get("/_sim/faults").json()
    assert report["fired"]["lookup_customer.error_before_act"] == first.count(503)


def test_invalid_fault_configs_are_refused(client: httpx.Client) -> None:
    for bad in (
        {"tools": {"nope": {}}},
        {"global": {"latency": {"rate": 2}}},
        {"global": {"explode": {"rate": 1}}},
    ):
        assert client.post("/_sim/faults", json=bad).status_code == 422


def test_the_config_file_is_loaded_and_reset_returns_to_it(
    client: httpx.Client, run_id: str
) -> None:
    key = uuid.uuid4().hex
    assert call(client, "post_note", WRITES["post_note"], run_id, key, token=5).status_code == 200
    assert client.get("/_sim/faults").json()["faults"]["seed"] == 42
    set_faults(client, {"seed": 1})
    assert client.post("/_sim/reset").status_code == 200
    assert client.get("/_sim/faults").json()["faults"]["seed"] == 42
    assert client.get("/_sim/audit").json()["rows"] == []
    again = call(client, "post_note", WRITES["post_note"], run_id, key, token=1)
    assert again.status_code == 200, "the fences were reset too"


def test_start_fails_clearly_without_the_tables(pg_dsn: str) -> None:
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, options="-c search_path=no_such_schema")
    done = subprocess.run(
        [RUNCOORD, "sim", "tools", "--port", str(free_port()), "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "runcoord db migrate" in done.stderr


# ---- request deadlines and fencing tokens (tools.yaml, "Request deadlines and fencing") --------


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize("tool", sorted(WRITES))
def test_a_write_past_its_deadline_is_refused_without_acting(
    client: httpx.Client, run_id: str, tool: str
) -> None:
    key = uuid.uuid4().hex
    late = call(client, tool, WRITES[tool], run_id, key, deadline_ms=now_ms() - 1)
    assert late.status_code == 408
    assert late.json()["error"]["type"] == "deadline_exceeded"
    assert audit(client, run_id) == []
    on_time = call(client, tool, WRITES[tool], run_id, key, deadline_ms=now_ms() + 5000)
    assert on_time.status_code == 200
    assert len(audit(client, run_id)) == 1


def test_the_deadline_is_checked_after_the_latency_spike(client: httpx.Client, run_id: str) -> None:
    set_faults(client, {"tools": {"update_crm": {"latency": {"rate": 1.0, "ms": 600}}}})
    key = uuid.uuid4().hex
    held = call(client, "update_crm", WRITES["update_crm"], run_id, key, deadline_ms=now_ms() + 300)
    assert held.status_code == 408, "it arrived in time, but reached the tool too late"
    assert audit(client, run_id) == []


def test_a_read_ignores_the_deadline(client: httpx.Client, run_id: str) -> None:
    late = call(client, "search_kb", READS["search_kb"], run_id, "r", deadline_ms=now_ms() - 1)
    assert late.status_code == 200


def test_a_bad_deadline_header_is_refused(client: httpx.Client, run_id: str) -> None:
    response = client.post(
        "/tools/post_note",
        json=WRITES["post_note"],
        headers={"X-Tenant": "t1", "X-Run-Id": run_id, "X-Request-Deadline": "soon"},
    )
    assert response.status_code == 400
    assert audit(client, run_id) == []


@pytest.mark.parametrize("tool", ["create_ticket", "update_crm"])
def test_a_stale_fencing_token_is_refused_with_409(
    client: httpx.Client, run_id: str, tool: str
) -> None:
    key = uuid.uuid4().hex
    assert call(client, tool, WRITES[tool], run_id, key, token=5).status_code == 200
    stale = call(client, tool, WRITES[tool], run_id, key, token=4)
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert error["type"] == "fenced" and error["seen"] == 5
    assert [r["fencing_token"] for r in audit(client, run_id)] == [5]
    assert call(client, tool, WRITES[tool], run_id, key, token=6).status_code == 200


def test_concurrent_holders_never_act_out_of_token_order(gateway: str, run_id: str) -> None:
    """The fence is checked and raised in the action's transaction: once a token has acted,
    no lower token acts, however the requests interleave."""
    key = uuid.uuid4().hex
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]

    def one(token: int) -> int:
        with httpx.Client(base_url=gateway, timeout=10) as c:
            return call(c, "post_note", WRITES["post_note"], run_id, key, token=token).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, tokens))
    assert set(statuses) <= {200, 409} and 200 in statuses
    with httpx.Client(base_url=gateway) as c:
        acted = [r["fencing_token"] for r in audit(c, run_id)]
    assert len(acted) == statuses.count(200)
    assert acted == sorted(acted), f"a lower token acted after a higher one: {acted}"
    assert acted[-1] == 9
