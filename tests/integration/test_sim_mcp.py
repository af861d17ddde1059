"""The sandbox tool gateway over MCP (the real `runcoord sim mcp` process, its own database),
called with the official MCP client as it ships. The verdict is the audit log (sandbox_audit),
read in PostgreSQL, never what the client was told."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import httpx2
import psycopg
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    CallToolResult,
    RequestParamsMeta,
    TextContent,
)
from psycopg.rows import dict_row

from runcoord.sim.tools.catalog import TOOLS
from tests.integration.faultkit import private_database
from tests.integration.processes import Proc, free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REPLAYED = "io.runcoord/replayed"


@dataclass(frozen=True)
class Gateway:
    base_url: str
    dsn: str  # its own database: nobody else's calls or resets

    @property
    def mcp(self) -> str:
        return f"{self.base_url}/mcp"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with private_database(pg_dsn) as dsn:
        port = free_port()
        log = tmp_path_factory.mktemp("mcp") / "gateway.log"
        proc = Proc("gateway", ["sim", "mcp", "--port", str(port), "--dsn", dsn], log)
        proc.start()
        try:
            base = f"http://127.0.0.1:{port}"
            proc.wait_http(f"{base}/_sim/health", timeout=60)
            yield Gateway(base, dsn)
        finally:
            proc.stop()
        assert "Traceback" not in proc.tail(100_000), proc.tail()


@asynccontextmanager
async def connected(
    gateway: Gateway, http: httpx2.AsyncClient | None = None, modern: bool = False
) -> AsyncIterator[ClientSession]:
    """A client session: the initialize handshake (2025), or server/discover (2026-07-28)."""
    async with (
        streamable_http_client(gateway.mcp, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await (session.discover() if modern else session.initialize())
        yield session


def meta(key: str | None = None, token: object = 1, **more: Any) -> RequestParamsMeta:
    """A call's `_meta`: what its HTTP headers would carry."""
    fields = {"io.runcoord/tenant": "t1", "io.runcoord/run-id": "run-mcp", **more}
    if key is not None:
        fields |= {"io.runcoord/idempotency-key": key, "io.runcoord/fencing-token": token}
    return cast(RequestParamsMeta, fields)


def audit(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    with psycopg.connect(gateway.dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM sandbox_audit WHERE idempotency_key = %s ORDER BY id", (key,)
        ).fetchall()


def answer(result: CallToolResult) -> Any:
    """The structured answer, checked against its text twin."""
    assert isinstance(result.content[0], TextContent)
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    found: dict[str, Any] = answer(result)["error"]
    return found


def set_faults(gateway: Gateway, faults: dict[str, Any]) -> None:
    response = httpx.post(f"{gateway.base_url}/_sim/faults", json=faults, timeout=10)
    assert response.status_code == 200, response.text


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_it_lists_every_tool_with_its_schema(gateway: Gateway) -> None:
    async with connected(gateway) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert set(listed) == {*TOOLS, "update_crm_actions"}
    for name, tool in TOOLS.items():
        assert listed[name].input_schema == tool.args.model_json_schema()
        assert listed[name].description
        hints = listed[name].annotations
        assert hints is not None and hints.read_only_hint == (tool.kind == "read")
    hint = {name: getattr(listed[name].annotations, "idempotent_hint", None) for name in listed}
    assert (hint["create_ticket"], hint["update_crm"]) == (True, False)
    assert listed["update_crm_actions"].input_schema["required"] == ["ref"]


async def test_one_key_acts_once_and_repeats_are_marked_replayed(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    args = {"subject": "Refund not received", "customer_id": "c-1"}
    async with connected(gateway) as session:
        answers = [await session.call_tool("create_ticket", args, meta=meta(key)) for _ in range(3)]
    assert not any(a.is_error for a in answers)
    assert answers[0].meta is None or REPLAYED not in answers[0].meta
    assert [a.meta for a in answers[1:]] == [{REPLAYED: True}] * 2
    assert all(a.structured_content == answers[0].structured_content for a in answers)
    rows = audit(gateway, key)
    assert len(rows) == 1
    assert (rows[0]["tenant"], rows[0]["run_id"], rows[0]["fencing_token"]) == ("t1", "run-mcp", 1)
    assert answer(answers[0])["ticket_id"] == f"TCK-{rows[0]['id']:07d}"


async def test_the_key_may_come_as_the_http_header(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    async with (
        httpx2.AsyncClient(headers={"Idempotency-Key": key}, timeout=10) as http,
        connected(gateway, http) as session,
    ):
        first = await session.call_tool(
            "send_email", {"to": "c@x.test", "subject": "s"}, meta=meta()
        )
        again = await session.call_tool(
            "send_email", {"to": "c@x.test", "subject": "s"}, meta=meta()
        )
    assert again.meta == {REPLAYED: True} and again.structured_content == first.structured_content
    assert len(audit(gateway, key)) == 1


async def test_a_lower_fencing_token_is_refused_without_acting(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    async with connected(gateway) as session:
        held = await session.call_tool("post_note", {"text": "first"}, meta=meta(key, token=5))
        stale = await session.call_tool("post_note", {"text": "stale"}, meta=meta(key, token=4))
    assert not held.is_error
    refused = error(stale)
    assert (refused["type"], refused["status"], refused["seen"]) == ("fenced", 409, 5)
    assert [r["fencing_token"] for r in audit(gateway, key)] == [5]


async def test_a_call_past_its_deadline_is_refused_without_acting(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    late = meta(key, **{"io.runcoord/request-deadline": now_ms() - 1})
    async with connected(gateway) as session:
        result = await session.call_tool(
            "charge_card", {"customer_id": "c", "amount_cents": 5}, meta=late
        )
    refused = error(result)
    assert (refused["type"], refused["status"]) == ("deadline_exceeded", 408)
    assert audit(gateway, key) == []


async def test_bad_calls_are_refused_as_over_http(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    note = {"text": "n"}
    async with connected(gateway) as session:
        no_tenant = await session.call_tool(
            "post_note", note, meta=meta(key, **{"io.runcoord/tenant": None})
        )
        bad_token = await session.call_tool("post_note", note, meta=meta(key, token="5"))
        bad_args = await session.call_tool("charge_card", {"customer_id": "c"}, meta=meta(key))
        with pytest.raises(MCPError) as unknown:
            await session.call_tool("no_such_tool", {}, meta=meta(key))
    assert (error(no_tenant)["type"], error(no_tenant)["status"]) == ("missing_meta", 400)
    assert (error(bad_token)["type"], error(bad_token)["status"]) == ("invalid_meta", 400)
    assert (error(bad_args)["type"], error(bad_args)["status"]) == ("invalid_arguments", 422)
    assert unknown.value.code == INVALID_PARAMS
    assert audit(gateway, key) == []


async def test_update_crm_actions_finds_the_action(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    update = {"customer_id": "c-1", "fields": {"status": "refunded"}}
    async with connected(gateway) as session:
        acted = await session.call_tool("update_crm", update, meta=meta(key))
        found = await session.call_tool("update_crm_actions", {"ref": key}, meta=meta())
        elsewhere = await session.call_tool(
            "update_crm_actions", {"ref": key}, meta=meta(**{"io.runcoord/tenant": "t9"})
        )
    assert not found.is_error
    assert answer(found)["ref"] == key
    actions = answer(found)["actions"]
    assert [a["response"] for a in actions] == [acted.structured_content]
    assert actions[0]["audit_id"] == audit(gateway, key)[0]["id"]
    assert elsewhere.structured_content == {"ref": key, "actions": []}


@pytest.mark.parametrize("modern", [False, True], ids=["handshake", "2026-07-28"])
async def test_drop_after_act_acts_then_breaks_the_stream(gateway: Gateway, modern: bool) -> None:
    key = uuid.uuid4().hex
    set_faults(gateway, {"tools": {"post_note": {"drop_after_act": {"rate": 1.0}}}})
    try:
        async with connected(gateway, modern=modern) as session:
            with pytest.raises(MCPError) as caught:
                await session.call_tool("post_note", {"text": "n"}, 5, meta=meta(key))
            # A broken stream, not a timeout; and the session lives on.
            assert caught.value.code == CONNECTION_CLOSED, caught.value
            assert not (await session.call_tool("search_kb", {"query": "refund"})).is_error
    finally:
        set_faults(gateway, {})
    assert len(audit(gateway, key)) == 1
