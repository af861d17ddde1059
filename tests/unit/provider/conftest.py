"""The provider adapters' fixtures: the simulated provider as a real HTTP server, the real SDK.

The simulator runs under uvicorn in a thread, on a port the OS picked, once per session and
emptied before each test. Its latencies are a few milliseconds, so a turn takes tens of
milliseconds and no test sleeps: they watch (poll) until a condition holds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from openai import AsyncOpenAI

from runcoord.provider import RUN_ID_KEY, BackoffPolicy
from runcoord.sim.provider.app import create_app
from runcoord.sim.provider.config import config_from_dict

# Model time per step 5 ms; queue and cancel 1 ms; the poll hint 5 ms.
SIM_CONFIG: dict[str, Any] = {
    "seed": 11,
    "timing": {"queue_ms": 1, "step_ms": 5, "cancel_ms": 1, "poll_after_ms": 5},
    "records": {"run_id_key": RUN_ID_KEY},
}
# Short delays, so a watch notices a change within a few ms of it.
FAST = BackoffPolicy(initial_ms=2, factor=1.5, max_ms=20)


class Sim:
    """uvicorn in a thread on a free port; stopped by flag, not by signal."""

    def __init__(self) -> None:
        # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted sockets
        # only when the listening socket says TCP, and without it every answer (headers and
        # body written apart) waits ~40 ms on Nagle and the client's delayed ACK.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(config_from_dict(SIM_CONFIG)),
            log_level="warning",
            ws="none",
            lifespan="off",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self.admin = httpx.Client(base_url=self.base_url + "/_sim", timeout=5)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self._healthy():
            if time.monotonic() > deadline:
                raise AssertionError("the simulated provider did not answer within 10 s")
            time.sleep(0.005)

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
        assert self.admin.post("/reset").status_code == 200

    def records(self) -> Any:
        return self.admin.get("/records").json()

    def faults(self, body: dict[str, Any]) -> None:
        response = self.admin.post("/faults", json=body)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="session")
def sim_server() -> Iterator[Sim]:
    server = Sim()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: Sim) -> Sim:
    """The session's simulator, emptied, faults off."""
    sim_server.reset()
    return sim_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(sim: Sim) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=sim.base_url + "/v1", api_key="sk-test") as sdk:
        yield sdk
