"""The tool gateway contract against HttpToolGateway and the real sandbox gateway: the
`runcoord sim tools` process on a database of this module's own, behind a TCP proxy the
tests can cut (the `sandbox` fixture, tests/integration/tools/conftest.py). The audit rows are
read from PostgreSQL, the sandbox's ground truth; faults are armed with the sandbox's own knobs
(POST /_sim/faults)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from runcoord.tools.gateway import ToolGateway
from runcoord.tools.http_gateway import HttpToolGateway
from runcoord.tools.memory_gateway import AuditRow
from runcoord.transport import gateway_client
from tests.integration.tools.sandbox import Sandbox
from tests.tool_gateway_contract import ToolGatewayContract

pytestmark = pytest.mark.integration

_ACTIONS = """
SELECT s.id, s.tool, s.tenant, s.run_id, s.tool_call_id, s.idempotency_key, s.fencing_token,
       s.payload_hash, a.response
FROM sandbox_audit s LEFT JOIN sandbox_actions a ON a.audit_id = s.id
WHERE s.idempotency_key = %s
ORDER BY s.id
"""


class HttpHarness:
    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox = sandbox
        self.gateway: ToolGateway = HttpToolGateway(f"http://{sandbox.proxy.url_netloc}/", http)
        self._faults: dict[str, dict[str, Any]] = {}
        self._cut = False

    def actions(self, effect_key: str) -> list[AuditRow]:
        with psycopg.connect(self.sandbox.dsn, row_factory=dict_row) as conn:
            rows = conn.execute(_ACTIONS, (effect_key,)).fetchall()
        return [
            AuditRow(
                r["id"],
                r["tool"],
                r["tenant"],
                r["run_id"],
                r["tool_call_id"],
                r["idempotency_key"],
                r["fencing_token"],
                r["payload_hash"],
                r["response"],
            )
            for r in rows
        ]

    def _arm(self, tool: str, knob: str, value: dict[str, Any]) -> None:
        self._faults.setdefault(tool, {})[knob] = value
        self._post_faults({"seed": 1, "tools": self._faults})

    def _post_faults(self, faults: dict[str, Any]) -> None:
        response = httpx.post(f"{self.sandbox.base_url}/_sim/faults", json=faults, timeout=10)
        assert response.status_code == 200, response.text

    def lose_answers(self, tool: str) -> None:
        self._arm(tool, "drop_after_act", {"rate": 1.0})

    def fail_before_acting(self, tool: str) -> None:
        self._arm(tool, "error_before_act", {"rate": 1.0, "status": 503})

    def cut(self) -> None:
        self.sandbox.proxy.stop()  # refuses connects, resets the pooled ones
        self._cut = True

    def now(self) -> float:
        return time.time()  # the sandbox's clock: the same host's

    def hold(self, tool: str, seconds: float) -> None:
        self._arm(tool, "latency", {"rate": 1.0, "ms": int(seconds * 1000)})

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def heal(self) -> None:
        if self._cut:
            self.sandbox.proxy.start()
            self._cut = False
        self._faults = {}
        self._post_faults({})


class TestHttpToolGateway(ToolGatewayContract):
    # The executor's client (httpx over aiohttp, runcoord/transport.py) and httpx's own: a
    # dropped answer must read as "may have acted" through either.
    @pytest.fixture(params=["aiohttp", "httpx"])
    async def harness(
        self, sandbox: Sandbox, request: pytest.FixtureRequest
    ) -> AsyncIterator[HttpHarness]:
        client = gateway_client() if request.param == "aiohttp" else httpx.AsyncClient()
        async with client as http:
            h = HttpHarness(sandbox, http)
            yield h
            h.heal()
