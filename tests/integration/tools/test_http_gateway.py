"""The tool gateway contract against HttpToolGateway and the real sandbox gateway: the
`runcoord sim tools` process on a database of this module's own, behind a TCP proxy the
tests can cut. The audit rows are read from PostgreSQL, the sandbox's ground truth; faults
are armed with the sandbox's own knobs (POST /_sim/faults)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from runcoord.tools.gateway import ToolGateway
from runcoord.tools.http_gateway import HttpToolGateway
from runcoord.tools.memory_gateway import AuditRow
from tests.integration.faultkit import private_database
from tests.integration.processes import Proc, free_port
from tests.tcp_proxy import TcpProxy
from tests.tool_gateway_contract import ToolGatewayContract

pytestmark = pytest.mark.integration

_ACTIONS = """
SELECT s.id, s.tool, s.tenant, s.run_id, s.tool_call_id, s.idempotency_key, s.fencing_token,
       s.payload_hash, a.response
FROM sandbox_audit s LEFT JOIN sandbox_actions a ON a.audit_id = s.id
WHERE s.idempotency_key = %s
ORDER BY s.id
"""


@dataclass(frozen=True)
class Sandbox:
    base_url: str  # direct: for the fault knobs
    dsn: str  # its own database: nobody else's calls or resets
    proxy: TcpProxy  # what the adapter talks to


@pytest.fixture(scope="module")
def sandbox(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    folder: Path = tmp_path_factory.mktemp("gateway")
    with private_database(pg_dsn) as dsn:
        port = free_port()
        proc = Proc(
            "gateway",
            ["sim", "tools", "--host", "127.0.0.1", "--port", str(port), "--dsn", dsn],
            folder / "gateway.log",
        )
        proc.start()
        proxy = TcpProxy("127.0.0.1", port)
        try:
            base = f"http://127.0.0.1:{port}"
            proc.wait_http(f"{base}/_sim/health", timeout=60)
            proxy.start()
            yield Sandbox(base, dsn, proxy)
        finally:
            proxy.stop()
            proc.stop()
        assert "Traceback" not in proc.tail(100_000), proc.tail()


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

    def heal(self) -> None:
        if self._cut:
            self.sandbox.proxy.start()
            self._cut = False
        self._faults = {}
        self._post_faults({})


class TestHttpToolGateway(ToolGatewayContract):
    @pytest.fixture
    async def harness(self, sandbox: Sandbox) -> AsyncIterator[HttpHarness]:
        async with httpx.AsyncClient() as http:
            h = HttpHarness(sandbox, http)
            yield h
            h.heal()
