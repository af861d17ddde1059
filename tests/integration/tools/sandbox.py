"""The real sandbox tool gateway for the tests of this package: the `runcoord sim tools`
process on a database of its own, behind a TCP proxy the tests can cut."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.faultkit import private_database
from tests.integration.processes import Proc, free_port
from tests.tcp_proxy import TcpProxy


@dataclass(frozen=True)
class Sandbox:
    base_url: str  # direct: for the fault knobs
    dsn: str  # its own database: nobody else's calls or resets
    proxy: TcpProxy  # what the adapters talk to


@contextmanager
def running_sandbox(pg_dsn: str, folder: Path) -> Iterator[Sandbox]:
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
