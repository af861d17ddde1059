"""The provider webhook: signatures checked with the openai SDK; only what is safe to apply
becomes an observation, the rest is recorded and answered 200."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.domain.inputs import RunObserved
from runcoord.domain.model import ToolCall
from runcoord.forensics.synthetic import RunSpec, encode, run_messages
from runcoord.kafka import TopicNames
from tests.integration.api.world import World, api, signed
from tests.integration.forensics.journal import produce
from tests.integration.forensics.projection import projector, wait_rows

pytestmark = pytest.mark.integration


def event(kind: str, object_id: str) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "created_at": int(time.time()), "type": kind,
            "data": {"id": object_id}}  # fmt: skip


def deliver(w: World, body: bytes, headers: dict[str, str]) -> Any:
    return w.client.post("/v1/webhooks/provider", content=body, headers=headers)


def test_bad_signatures_are_rejected(bootstrap: str, pg_dsn: str, topics: TopicNames) -> None:
    with api(pg_dsn, bootstrap, topics) as w:
        body, headers = signed(event("response.failed", "resp_1"))
        forged = {**headers, "webhook-signature": "v1,bm90IHRoZSBzaWduYXR1cmU="}
        assert deliver(w, body, forged).status_code == 400
        tampered = body.replace(b"resp_1", b"resp_2")
        assert deliver(w, tampered, headers).status_code == 400
        unsigned = {"content-type": "application/json"}
        assert deliver(w, body, unsigned).status_code == 400
        _, other_secret = signed(event("response.failed", "resp_1"), "whsec_b3RoZXI=")
        assert deliver(w, body, other_secret).status_code == 400


def test_final_events_become_observations_once_and_the_rest_is_recorded(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    run_id = f"wh-{unique}"
    spec = RunSpec(run_id, "t1", f"th-{unique}", "hi", (ToolCall("c1", "lookup_customer", "{}"),),
                   int(time.time() * 1000))  # fmt: skip
    # A run the provider is working on: accepted, provider run created, nothing since.
    live = [m for m in run_messages(spec)[:3]]
    produce(bootstrap, list(encode(live, topics, AvroCodec(), 6)))
    with projector(bootstrap, pg_dsn, topics, f"{topics.events}-projector"):
        wait_rows(
            pg_dsn,
            "SELECT count(*) FROM forensics_runs WHERE journal = %s AND provider_run_id = %s",
            (topics.events, f"pr_{run_id}"),
            lambda n: n == 1,
        )
    with api(pg_dsn, bootstrap, topics) as w:
        body, headers = signed(event("response.failed", f"pr_{run_id}"))
        first = deliver(w, body, headers)
        again = deliver(w, body, headers)  # the provider retries a delivery
        completed = deliver(w, *signed(event("response.completed", f"pr_{run_id}")))
        stranger = deliver(w, *signed(event("response.failed", "resp_unknown")))
        batch = deliver(w, *signed(event("batch.completed", "batch_1")))
    assert first.status_code == 200
    assert first.json() == {"handling": "observation", "reason": None, "run_id": run_id,
                            "duplicate": False}  # fmt: skip
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert completed.json()["handling"] == "recorded"
    assert "function calls" in completed.json()["reason"]
    assert stranger.json()["handling"] == "recorded" and stranger.json()["run_id"] is None
    assert batch.json()["handling"] == "recorded"

    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT record_name, payload FROM api_outbox WHERE topic = %s", (topics.inbox,)
        ).fetchall()
    assert [r[0] for r in rows] == ["RunObserved"]  # one, despite the redelivery
    observed = from_record(*AvroCodec().decode(bytes(rows[0][1])))
    assert isinstance(observed, RunObserved)
    assert (observed.run_id, observed.status, observed.watch) == (run_id, "failed", 2)
