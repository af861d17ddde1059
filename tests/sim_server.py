"""The one simulator harness: the simulated provider as a real HTTP server for a test session
(uvicorn in a thread, on a port the OS picked, stopped by flag, not by signal). The provider
adapters' tests and the simulator's own SDK tests both use it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn

from runcoord.sim.provider.app import create_app
from runcoord.sim.provider.config import SimConfig


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


class LiveServer:
    def __init__(self, config: SimConfig) -> None:
        # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted sockets
        # only when the listening socket says TCP, and without it every answer (headers and
        # body written apart) waits ~40 ms on Nagle and the client's delayed ACK.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        server_config = uvicorn.Config(
            create_app(config), log_level="warning", ws="none", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(server_config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self.admin = httpx.Client(base_url=self.base_url + "/_sim", timeout=5)

    def start(self) -> None:
        self.thread.start()
        wait_until(self._healthy, what="the simulator to answer")

    def _healthy(self) -> bool:
        try:
            return self.admin.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.admin.close()
        self.socket.close()

    def reset(self) -> None:
        """Empty it and turn its faults off."""
        assert self.admin.post("/reset").status_code == 200

    def records(self) -> Any:
        return self.admin.get("/records").json()

    def faults(self, body: dict[str, Any]) -> Any:
        response = self.admin.post("/faults", json=body)
        assert response.status_code == 200, response.text
        return response.json()
