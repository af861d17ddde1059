"""Threads and conversations are created once per Idempotency-Key, and recorded: a client that
lost the answer asks again with the same key and gets the same container, never a second."""

from __future__ import annotations

import pytest
from provider_harness import SimClient


@pytest.mark.parametrize("path", ["/threads", "/conversations"])
def test_a_repeat_with_the_same_key_gets_the_first_container(sim: SimClient, path: str) -> None:
    body = {"metadata": {"runcoord_conversation": "t1/c1"}}
    first = sim.call("POST", path, body, headers={"Idempotency-Key": "ek-1"})
    again = sim.call("POST", path, body, headers={"Idempotency-Key": "ek-1"})
    other = sim.call("POST", path, body, headers={"Idempotency-Key": "ek-2"})
    unkeyed = [sim.ok("POST", path, body)["id"] for _ in range(2)]
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(set(unkeyed)) == 2  # without a key, every request creates one
    containers = sim.admin("GET", "/records")["containers"]
    assert [(c["id"], c["replays"]) for c in containers] == [
        (first.json()["id"], 1),
        (other.json()["id"], 0),
        (unkeyed[0], 0),
        (unkeyed[1], 0),
    ]
