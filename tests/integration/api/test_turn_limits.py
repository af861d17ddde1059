"""What a turn may carry: metadata within the provider's limits with room for our own keys,
and a StartRun small enough for Kafka (finding 4: one oversize turn stopped the relay)."""

from __future__ import annotations

import json

import psycopg
import pytest

from runcoord.api import tenants
from runcoord.api.keys import tenant_for
from runcoord.kafka import TopicNames
from runcoord.provider.port import RUN_ID_KEY, STEP_KEY, run_metadata
from tests.integration.api.world import config, serving

pytestmark = pytest.mark.integration

# OpenAI's limits on an object's metadata: 16 pairs, keys up to 64 characters, values up to 512.
PROVIDER_PAIRS, KEY_CHARS, VALUE_CHARS = 16, 64, 512
# The most keys of ours an adapter adds to a turn's metadata (responses: the run id and the step).
OURS = len(run_metadata({}, "run", "step"))


def test_metadata_keeps_to_the_providers_limits_with_room_for_our_keys(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    room = PROVIDER_PAIRS - OURS
    most = {f"{i:02d}".ljust(KEY_CHARS, "k"): "v" * VALUE_CHARS for i in range(room)}
    with serving(config(pg_dsn, bootstrap, topics)) as s:

        def post(idem: str, metadata: dict[str, str]) -> tuple[int, str]:
            r = s.post_turn(s.key_a, f"th-{unique}", f"{idem}-{unique}", metadata=metadata)
            return r.status_code, r.text

        assert post("most", most)[0] == 202
        status, text = post("one-more", {**most, "extra": "v"})
        assert status == 422 and f"at most {room} pairs" in text, text
        status, text = post("long-key", {"k" * (KEY_CHARS + 1): "v"})
        assert status == 422 and f"at most {KEY_CHARS} characters" in text, text
        status, text = post("long-value", {"k": "v" * (VALUE_CHARS + 1)})
        assert status == 422, text
        for ours in (RUN_ID_KEY, STEP_KEY):
            status, text = post(f"ours-{ours}", {ours: "run_someone_elses"})
            assert status == 422 and "reserved" in text, text
        status, text = post("empty-key", {"": "v"})
        assert status == 422, text


def test_a_turn_whose_start_run_is_over_the_record_limit_is_refused_with_413(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    with serving(config(pg_dsn, bootstrap, topics, max_start_run_bytes=4_000)) as s:
        big = s.post_turn(s.key_a, f"th-{unique}", f"big-{unique}", input="x" * 8_000)
        small = s.post_turn(s.key_a, f"th-{unique}", f"small-{unique}", input="hi")
    assert big.status_code == 413, big.text
    assert "4000 bytes" in big.json()["detail"]
    assert small.status_code == 202, small.text
    with psycopg.connect(pg_dsn) as conn:  # nothing of the refused turn was kept
        kept = conn.execute(
            "SELECT count(*) FROM api_turns WHERE idempotency_key = %s", (f"big-{unique}",)
        ).fetchone()
    assert kept == (0,)


def test_the_largest_valid_turn_fits_the_default_limits(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    """Four-byte characters everywhere, every field at its longest: accepted, not 413."""
    room = PROVIDER_PAIRS - OURS
    body = {
        "input": "\U0001f600" * 32_000,
        "assistant_id": "a" * 128,
        "metadata": {
            f"{i:02d}".ljust(KEY_CHARS, "\U0001f600"): "\U0001f600" * VALUE_CHARS
            for i in range(room)
        },
    }
    with serving(config(pg_dsn, bootstrap, topics)) as s:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            tenant = tenant_for(conn, s.key_a)
            assert tenant is not None
            tenants.allow(conn, tenant, body["assistant_id"])
        r = s.http.post(
            f"/v1/threads/th-{unique}/turns",
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={
                **s.auth(s.key_a),
                "Idempotency-Key": f"largest-{unique}",
                "Content-Type": "application/json",
            },
        )
    assert r.status_code == 202, r.text[:500]
