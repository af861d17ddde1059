"""The API's own limits, over real HTTP (finding 5): request bodies, database connections,
per-tenant request rates and event streams, streams that hold no worker thread, and streams
that end when their key is revoked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import psycopg
import pytest

from runcoord.api.keys import revoke
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from tests.integration.api.world import Served, config, key_id, serving, signed
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration

KiB = 1024


def _turn_headers(s: Served, idem: str) -> dict[str, str]:
    return {**s.auth(s.key_a), "Idempotency-Key": idem, "Content-Type": "application/json"}


def _pending_run(s: Served, key: str, unique: str) -> str:
    """A run that is accepted and stays pending (no relay here): its stream never ends alone."""
    r = s.http.post(
        f"/v1/threads/th-{key[-6:]}-{unique}/turns",
        json={"input": "hi"},
        headers={**s.auth(key), "Idempotency-Key": f"p-{unique}"},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


# --------------------------------------------------------------------------- bodies


def test_bodies_over_the_limit_are_refused_before_parsing_on_both_routes(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    with serving(config(pg_dsn, bootstrap, topics)) as s:
        url = f"/v1/threads/th-{unique}/turns"
        # The request: a 1 MB metadata key.
        huge_key = s.post_turn(s.key_a, f"th-{unique}", "k1", metadata={"k" * 1_000_000: "v"})
        assert huge_key.status_code == 413, huge_key.text[:300]
        # Not even JSON: refused for its size, not parsed (which would say 422).
        junk = s.http.post(url, content=b"\x00" * (600 * KiB), headers=_turn_headers(s, "k2"))
        assert junk.status_code == 413, junk.text[:300]
        # Chunked, no Content-Length: counted as it streams in.
        chunks = (b"\x00" * (64 * KiB) for _ in range(10))
        streamed = s.http.post(url, content=chunks, headers=_turn_headers(s, "k3"))
        assert streamed.status_code == 413, streamed.text[:300]
        # The webhook route too, with its own (smaller) limit, before the signature is checked.
        event = {"id": "evt_1", "object": "event", "created_at": int(time.time()),
                 "type": "batch.completed", "data": {"id": "b1"},
                 "pad": "x" * (100 * KiB)}  # fmt: skip
        body, headers = signed(event)
        hook = s.http.post("/v1/webhooks/provider", content=body, headers=headers)
        assert hook.status_code == 413, hook.text[:300]
        # Within the limits: as before.
        body, headers = signed({**event, "pad": ""})
        assert s.http.post("/v1/webhooks/provider", content=body, headers=headers).is_success
        assert s.post_turn(s.key_a, f"th-{unique}", "k4").status_code == 202


# --------------------------------------------------------------------------- connections


def test_requests_share_a_bounded_connection_pool(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    app_name = f"api-{unique}"
    dsn = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name={app_name}"
    limits = {"db_pool_max": 4, "rate_per_s": 10_000.0, "rate_burst": 10_000}
    with serving(config(dsn, bootstrap, topics, **limits)) as s:
        run_id = _pending_run(s, s.key_a, unique)
        peak, stop = [0], threading.Event()

        def sample() -> None:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                while not stop.is_set():
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (app_name,),
                    ).fetchone()
                    peak[0] = max(peak[0], int(row[0]) if row else 0)
                    time.sleep(0.005)

        def get(_: int) -> int:
            r = s.http.get(f"/v1/runs/{run_id}", headers=s.auth(s.key_a))
            return r.status_code

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(get, range(300)))
        finally:
            stop.set()
            sampler.join()
    assert set(statuses) == {200}, statuses
    assert 0 < peak[0] <= 4, f"{peak[0]} connections open at once"


# --------------------------------------------------------------------------- rates


def test_a_tenant_over_its_rate_gets_429_with_retry_after(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    with serving(config(pg_dsn, bootstrap, topics, rate_per_s=0.5, rate_burst=3)) as s:
        seen = [s.http.get("/v1/runs/run_nope", headers=s.auth(s.key_a)) for _ in range(4)]
        posted = s.post_turn(s.key_a, f"th-{unique}", "r1")
        other = s.http.get("/v1/runs/run_nope", headers=s.auth(s.key_b))
    assert [r.status_code for r in seen] == [404, 404, 404, 429]
    assert int(seen[3].headers["Retry-After"]) >= 1
    assert posted.status_code == 429
    assert other.status_code == 404  # the other tenant has a bucket of its own


def test_with_redis_down_requests_are_allowed(
    bootstrap: str, pg_dsn: str, topics: TopicNames
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings = {"redis_url": down, "rate_per_s": 0.5, "rate_burst": 1}
    with serving(config(pg_dsn, bootstrap, topics, **settings)) as s:
        seen = [s.http.get("/v1/runs/run_nope", headers=s.auth(s.key_a)) for _ in range(5)]
    assert [r.status_code for r in seen] == [404] * 5


# --------------------------------------------------------------------------- event streams


@pytest.fixture
def streams() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def _open(s: Served, stack: ExitStack, key: str, run_id: str) -> httpx.Response:
    return stack.enter_context(
        s.http.stream("GET", f"/v1/runs/{run_id}/events", headers=s.auth(key))
    )


def test_a_tenant_has_at_most_its_cap_of_open_streams(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str, streams: ExitStack
) -> None:
    with serving(config(pg_dsn, bootstrap, topics, streams_per_tenant=2)) as s:
        mine, theirs = _pending_run(s, s.key_a, unique), _pending_run(s, s.key_b, unique)
        first = ExitStack()
        assert _open(s, first, s.key_a, mine).status_code == 200
        assert _open(s, streams, s.key_a, mine).status_code == 200
        refused = _open(s, streams, s.key_a, mine)
        assert refused.status_code == 429
        assert _open(s, streams, s.key_b, theirs).status_code == 200  # a cap per tenant
        first.close()  # the client goes away: its slot is freed

        def reopened() -> str | None:
            with s.http.stream("GET", f"/v1/runs/{mine}/events", headers=s.auth(s.key_a)) as r:
                return None if r.status_code == 200 else f"still {r.status_code}"

        wait_until(reopened, timeout=15, what="a freed stream slot")


def test_open_streams_hold_no_worker_thread(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str, streams: ExitStack
) -> None:
    with serving(config(pg_dsn, bootstrap, topics), worker_threads=4) as s:
        run_id = _pending_run(s, s.key_a, unique)
        for _ in range(4):
            assert _open(s, streams, s.key_a, run_id).status_code == 200
        started = time.monotonic()
        r = s.http.get(f"/v1/runs/{run_id}", headers=s.auth(s.key_a), timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - started < 5


def test_revoking_a_key_ends_its_open_streams(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    with serving(config(pg_dsn, bootstrap, topics, key_recheck_s=0.5)) as s:
        run_id = _pending_run(s, s.key_a, unique)
        with s.http.stream(
            "GET", f"/v1/runs/{run_id}/events", headers=s.auth(s.key_a), timeout=8
        ) as stream:
            assert stream.status_code == 200
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                assert revoke(conn, key_id(s.key_a))
            revoked = time.monotonic()
            for _ in stream.iter_raw():
                pass  # the server ends the stream; a ReadTimeout here means it did not
            took = time.monotonic() - revoked
        assert took < 5, f"the stream ended {took:.1f}s after the revocation"
        gone = s.http.get(f"/v1/runs/{run_id}", headers=s.auth(s.key_a))
        assert gone.status_code == 401
