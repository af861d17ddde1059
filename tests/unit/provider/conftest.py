"""The provider adapters' fixtures: the simulated provider as a real HTTP server, the real SDK.

The simulator runs under uvicorn in a thread, on a port the OS picked, once per session and
emptied before each test. Its latencies are a few milliseconds, so a turn takes tens of
milliseconds and no test sleeps: they watch (poll) until a condition holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from runcoord.provider import RUN_ID_KEY, BackoffPolicy
from runcoord.provider.client import open_client
from runcoord.sim.provider.config import config_from_dict
from tests.sim_server import LiveServer

# Model time per step 5 ms; queue and cancel 1 ms; the poll hint 5 ms.
SIM_CONFIG: dict[str, Any] = {
    "seed": 11,
    "timing": {"queue_ms": 1, "step_ms": 5, "cancel_ms": 1, "poll_after_ms": 5},
    "records": {"run_id_key": RUN_ID_KEY},
}
# The marks of a test module that drives the Assistants adapter. The SDK marks its Assistants
# methods deprecated (OpenAI sunset its hosted Assistants API; assistants.* say just
# "deprecated"); the adapter targets Assistants-compatible servers on purpose, so exactly
# those warnings are let through.
ASSISTANTS_MODULE = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]
# Short delays, so a watch notices a change within a few ms of it.
FAST = BackoffPolicy(initial_ms=2, factor=1.5, max_ms=20)


class Sim(LiveServer):
    def __init__(self) -> None:
        super().__init__(config_from_dict(SIM_CONFIG))


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
    # The executors' own client (over aiohttp): what a lost answer looks like depends on it.
    async with open_client(sim.base_url + "/v1", "sk-test") as sdk:
        yield sdk
