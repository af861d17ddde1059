"""Reading runs through the API: from the projection, one tenant never sees another's."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from runcoord.api.relay import RelayConfig, relaying
from runcoord.kafka import TopicNames
from tests.integration.api.world import api
from tests.integration.forensics.projection import projector, wait_rows
from tests.integration.processes import Proc, running

pytestmark = pytest.mark.integration


def test_a_tenant_reads_its_runs_and_gets_404_for_anothers(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path, unique: str
) -> None:
    prefix = topics.inbox.removesuffix("runs.inbox")
    coordinator = Proc(
        "coordinator",
        ["coordinator", "--instance-id", "c0", "--group", f"{prefix}coord",
         "--topic-prefix", prefix],
        tmp_path / "coord.log",
    )  # fmt: skip
    thread = f"th-{unique}"
    with (
        api(pg_dsn, bootstrap, topics) as w,
        running(coordinator),
        relaying(RelayConfig(bootstrap, pg_dsn, [topics.inbox])),
        projector(bootstrap, pg_dsn, topics, f"{prefix}projector"),
    ):
        posted = w.post_turn(w.key_a, thread, "k-1")
        assert posted.status_code == 202
        run_id = posted.json()["run_id"]
        # Before the coordinator has it: the API's own record, still the tenant's only.
        assert w.client.get(f"/v1/runs/{run_id}", headers=w.auth(w.key_b)).status_code == 404

        # Through the relay, the coordinator and the projector.
        wait_rows(
            pg_dsn,
            "SELECT count(*) FROM forensics_runs WHERE journal = %s AND run_id = %s",
            (topics.events, run_id),
            lambda n: n == 1,
        )
        mine = w.client.get(f"/v1/runs/{run_id}", headers=w.auth(w.key_a))
        assert mine.status_code == 200, coordinator.tail()
        assert mine.json()["thread_id"] == thread
        assert mine.json()["status"] == "creating"  # no provider executor in this test
        theirs = w.client.get(f"/v1/runs/{run_id}", headers=w.auth(w.key_b))
        assert theirs.status_code == 404
        assert w.client.get(f"/v1/runs/{run_id}/events", headers=w.auth(w.key_b)).status_code == 404
        assert w.client.get(f"/v1/runs/{run_id}").status_code == 401
        assert w.client.get("/v1/runs/run_nope", headers=w.auth(w.key_a)).status_code == 404
        # The other tenant's thread of the same name is its own: a new run, not this one's.
        theirs_too = w.post_turn(w.key_b, thread, "k-1")
        assert theirs_too.status_code == 202 and theirs_too.json()["run_id"] != run_id
        shown = w.client.get(f"/v1/threads/{thread}", headers=w.auth(w.key_a)).json()
        assert [r["run_id"] for r in shown["runs"]] == [run_id]

        events = w.client.get(
            f"/v1/runs/{run_id}/events", params={"follow": "false"}, headers=w.auth(w.key_a)
        )
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in events.text.split("\n\n") if f.strip()]
        assert frames[0].startswith("id: 1\nevent: RunAccepted\ndata: {")
        assert f'"run_id":"{run_id}"' in frames[0]
        # A reconnect resumes after the last event it saw.
        resumed = w.client.get(
            f"/v1/runs/{run_id}/events",
            params={"follow": "false"},
            headers={**w.auth(w.key_a), "Last-Event-ID": "1"},
        )
        assert "event: RunAccepted" not in resumed.text

    with psycopg.connect(pg_dsn) as conn:
        owner = conn.execute("SELECT tenant FROM api_threads WHERE thread_id = %s", (thread,))
        assert owner.fetchone() is not None
