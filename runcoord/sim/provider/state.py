"""Everything one simulator instance holds, reachable from a request as ``sim_of(request)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from starlette.requests import HTTPConnection

from runcoord.sim.provider.assistants_model import Thread
from runcoord.sim.provider.assistants_store import AssistantsStore
from runcoord.sim.provider.clock import Clock
from runcoord.sim.provider.config import SimConfig
from runcoord.sim.provider.faults import Faults
from runcoord.sim.provider.ids import Ids
from runcoord.sim.provider.records import Api, ContainerRecord, CreateRecord, Records
from runcoord.sim.provider.responses_store import ResponsesStore


class SimState:
    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.ids = Ids(config.seed)
        self.faults = Faults(config.faults, clock, config.seed)
        self.reset()

    def reset(self) -> None:
        """Forget every object and record; faults go back to the ones set at start."""
        self.faults.set(self.config.faults, seed=self.config.seed)
        self.faults.fired.clear()
        self.records = Records(self.config.run_id_key)
        # POST /threads and /conversations honour Idempotency-Key: a repeat gets the first
        # answer, so a client that lost it can ask again without making a second container.
        self.created_by_key: dict[tuple[str, str], ContainerRecord] = {}
        self.assistants = AssistantsStore(
            self.ids,
            self.clock,
            self.config.timing,
            self.config.scripts,
            lambda: self.faults.slow_factor,
        )
        self.responses = ResponsesStore(
            self.ids,
            self.clock,
            self.config.timing,
            self.config.scripts,
            lambda: self.faults.slow_factor,
        )

    def now_of(self, record: CreateRecord) -> dict[str, Any]:
        """What a create record made is now: its ``status`` (its thread may be deleted); for
        a response also ``completed_at`` (when it completed, to the millisecond of the
        simulator's clock, unlike the API's whole seconds) and ``call_ids`` (its function
        calls: a response completed with some is a step entering requires_action then)."""
        if record.api == "assistants":
            run = self.assistants.runs.get(record.id)
            if run is None:
                return {"status": None}
            # A deleted thread's runs still move; their replies go nowhere.
            thread = self.assistants.threads.get(run.thread_id) or Thread(run.thread_id, 0.0, {})
            self.assistants.engine.advance(thread, run, self.clock.now())
            return {"status": run.status}
        response = self.responses.responses.get(record.id)
        if response is None:
            return {"status": None, "completed_at": None, "call_ids": []}
        self.responses.advance(response)
        return {
            "status": response.status,
            "completed_at": response.completed_at,
            "call_ids": [call["call_id"] for call in response.calls],
        }


def sim_of(connection: HTTPConnection) -> SimState:
    return cast(SimState, connection.app.state.sim)


def created_once(
    sim: SimState, api: Api, key: str | None, create: Callable[[], tuple[str, dict[str, str]]]
) -> tuple[str, bool]:
    """Create a thread or conversation once per Idempotency-Key: (its id, replayed). Without a
    key every request creates one, as OpenAI's API does."""
    if key is not None and (api, key) in sim.created_by_key:
        record = sim.created_by_key[(api, key)]
        record.replays += 1
        return record.id, True
    container_id, metadata = create()
    record = ContainerRecord(api, container_id, dict(metadata), key, sim.clock.now())
    sim.records.containers.append(record)
    if key is not None:
        sim.created_by_key[(api, key)] = record
    return container_id, False
