"""The simulated provider and the sandbox gateway of one replay: configs, processes, admin.

Both run as subprocesses on free ports. Faults are switched through their ``/_sim/faults``
APIs while the replay runs; the evidence is read back at the end (the provider's records
over HTTP, the audit log straight from the replay's database).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from runcoord.harness.replay.procs import Replica, free_port, python_argv
from runcoord.harness.report.data import AuditRow
from runcoord.stack.polling import wait_until

# The runcoord adapters put our run id under this metadata key (runcoord/provider/port.py);
# the baseline does the same, so the provider's records name our runs for both.
RUN_ID_KEY = "runcoord_run_id"


def provider_config(path: Path, *, queue_ms: float, expires_after_s: float, seed: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "seed": seed,
                "timing": {
                    "queue_ms": queue_ms,
                    "poll_after_ms": 200,
                    "expires_after_s": expires_after_s,
                },
                "records": {"run_id_key": RUN_ID_KEY},
            }
        )
    )
    return path


class Sims:
    def __init__(self, folder: Path, dsn: str, *, queue_ms: float, expires_after_s: float) -> None:
        self.provider_port, self.gateway_port = free_port(), free_port()
        self.dsn = dsn
        config = provider_config(
            folder / "sim-provider.yaml", queue_ms=queue_ms, expires_after_s=expires_after_s, seed=7
        )
        self.provider = Replica(
            "sim-provider",
            "infra",
            python_argv(
                "sim",
                "provider",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.provider_port),
                "--config",
                str(config),
            ),
            folder / "logs" / "sim-provider.log",
        )
        self.gateway = Replica(
            "sim-gateway",
            "infra",
            python_argv(
                "sim",
                "tools",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.gateway_port),
                "--dsn",
                dsn,
                "--pool-size",
                "20",
            ),
            folder / "logs" / "sim-gateway.log",
        )
        self.http = httpx.Client(timeout=30)

    @property
    def provider_url(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}/v1"

    @property
    def provider_admin(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}/_sim"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        for replica, url in (
            (self.provider, f"{self.provider_admin}/health"),
            (self.gateway, f"{self.gateway_url}/_sim/health"),
        ):

            def up(replica: Replica = replica, url: str = url) -> str | None:
                if not replica.alive():
                    raise RuntimeError(f"{replica.name} exited:\n{replica.tail()}")
                try:
                    return None if self.http.get(url, timeout=2).status_code == 200 else "not ok"
                except httpx.HTTPError as exc:
                    return type(exc).__name__

            wait_until(up, timeout=timeout, what=replica.name, interval=0.3)

    def provider_faults(self, body: dict[str, Any]) -> None:
        self.http.post(f"{self.provider_admin}/faults", json=body).raise_for_status()

    def gateway_faults(self, body: dict[str, Any]) -> None:
        self.http.post(f"{self.gateway_url}/_sim/faults", json=body).raise_for_status()

    def fired(self) -> dict[str, Any]:
        provider = self.http.get(f"{self.provider_admin}/faults").json().get("fired", {})
        gateway = self.http.get(f"{self.gateway_url}/_sim/faults").json().get("fired", {})
        return {"provider": provider, "gateway": gateway}

    def records(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(f"{self.provider_admin}/records", timeout=120).json()
        return data

    def arrivals(self) -> list[dict[str, Any]]:
        """When each tool request reached the gateway (reads too); lost if it restarted."""
        data = self.http.get(f"{self.gateway_url}/_sim/arrivals", timeout=120).json()
        rows: list[dict[str, Any]] = data["arrivals"]
        return rows

    def audit(self) -> list[AuditRow]:
        """The ground truth, read from the database itself (not through the gateway)."""
        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT tool, tenant, run_id, tool_call_id, payload_hash, idempotency_key, "
                "extract(epoch FROM acted_at)::float8 FROM sandbox_audit ORDER BY id"
            ).fetchall()
        return [
            AuditRow(str(r[0]), str(r[1]), r[2], r[3], str(r[4]), r[5], float(r[6])) for r in rows
        ]

    def close(self) -> None:
        self.http.close()
