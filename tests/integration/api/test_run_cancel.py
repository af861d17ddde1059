"""POST /v1/runs/{run_id}/cancel on the whole product: a run held by an approval is cancelled
through the outbox (the run ends cancelled, its held call never acts); a retry with the same
Idempotency-Key is a replay; the key reused for another cancel is a 409; another tenant's run
is a 404 like a missing one; a finished run is a 409."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def world(
    bootstrap: str,
    pg_dsn: str,
    topic_specs: list[TopicSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, str, str]]:
    folder = tmp_path_factory.mktemp("cancel")
    with product_with_approvals(bootstrap, pg_dsn, topic_specs, folder, 15000) as stack:
        tag = uuid.uuid4().hex[:8]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            tenants.allow(conn, f"ka-{tag}", stack.assistant_id)
            yield stack, create(conn, f"ka-{tag}"), create(conn, f"kb-{tag}")


def call(stack: Stack, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{stack.api}{path}", headers=headers, timeout=30, **kwargs)


def held_run(stack: Stack, key: str) -> str:
    turn = script([("charge_card", {"customer_id": "C-3", "amount_cents": 50_000})])
    answer = call(
        stack,
        "POST",
        f"/v1/threads/th-{uuid.uuid4().hex[:8]}/turns",
        key,
        json={
            "input": "charge",
            "assistant_id": stack.assistant_id,
            "metadata": {"sim_script": json.dumps(turn)},
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["run_id"])


def test_a_cancel_ends_the_run_once_and_is_tenant_scoped(world: tuple[Stack, str, str]) -> None:
    stack, mine, theirs = world
    run_id = held_run(stack, mine)
    cancel = f"/v1/runs/{run_id}/cancel"
    key = {"Idempotency-Key": uuid.uuid4().hex}

    other = call(stack, "POST", cancel, theirs, json={"reason": "x"}, headers=key)
    missing = call(
        stack, "POST", f"/v1/runs/run_{uuid.uuid4().hex}/cancel", theirs, json={}, headers=key
    )
    assert (other.status_code, missing.status_code) == (404, 404)
    assert other.json() == {"detail": "no such run"} == missing.json()
    assert call(stack, "POST", cancel, mine, json={}).status_code == 422  # no Idempotency-Key

    first = call(stack, "POST", cancel, mine, json={"reason": "changed my mind"}, headers=key)
    assert first.status_code == 202, first.text
    assert first.json() == {"run_id": run_id, "reason": "changed my mind", "replayed": False}
    again = call(stack, "POST", cancel, mine, json={"reason": "changed my mind"}, headers=key)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = call(stack, "POST", cancel, mine, json={"reason": "another"}, headers=key)
    assert reused.status_code == 409

    assert stack.wait_finished({run_id}, timeout=60)[run_id][0] == "cancelled"
    rows = httpx.get(f"{stack.gateway}/_sim/audit", params={"run_id": run_id}).json()["rows"]
    assert rows == []  # the held charge never acted

    def projected() -> str | None:
        status = call(stack, "GET", f"/v1/runs/{run_id}", mine).json()["status"]
        return None if status == "cancelled" else f"status {status}"

    wait_until(projected, timeout=60, what=f"{run_id} projected as cancelled")
    late = call(stack, "POST", cancel, mine, json={}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert late.status_code == 409 and "is over" in late.json()["detail"]
    # The first request's retry is still its replay, after the run ended.
    replay = call(stack, "POST", cancel, mine, json={"reason": "changed my mind"}, headers=key)
    assert replay.status_code == 200 and replay.json()["replayed"] is True
