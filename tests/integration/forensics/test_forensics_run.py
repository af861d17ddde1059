"""`forensics run` on runs of a short end-to-end replay of the incident: the story is read from
the journal by the projection's offsets, merged with the ledger and the sandbox audit, and told
in words a support engineer understands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runcoord.kafka import TopicNames
from tests.integration.e2e import SDK_WARNINGS, launch, script
from tests.integration.forensics.projection import projector, wait_rows

pytestmark = [pytest.mark.integration, *SDK_WARNINGS]

TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


def forensics(*args: str) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "runcoord.cli", "forensics", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, time.monotonic() - started


def test_the_incident_explained(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path, unique: str
) -> None:
    runs = {
        f"fx-{unique}-{i}": script(
            [
                ("create_ticket", {"subject": f"refund {i}"}),
                ("post_note", {"text": f"called customer {i}"}),
            ]
        )
        for i in range(2)
    }
    prefix = topics.inbox.removesuffix("runs.inbox")
    with (
        # Hedging off: the story told here is the timeout and the retry with the same key
        # (hedged, the second request would get the first ticket before any timeout).
        launch(
            bootstrap, pg_dsn, topics, tmp_path, {"tools-exec": {"RUNCOORD_TOOL_HEDGE_MS": "0"}}
        ) as stack,
        projector(bootstrap, pg_dsn, topics, f"{prefix}projector"),
    ):
        # The seeds' incident: both tools act, then answer after the caller's timeout.
        stack.gateway_faults(
            {
                "seed": 1,
                "tools": {
                    "create_ticket": {"slow_success": {"rate": 1.0, "ms": 3000}},
                    "post_note": {"slow_success": {"rate": 1.0, "ms": 3500}},
                },
            }
        )
        stack.start_turns(runs)
        finished = stack.wait_finished(set(runs), timeout=120)
        assert {s for s, _ in finished.values()} == {"completed"}
        wait_rows(
            pg_dsn,
            "SELECT count(*) FROM forensics_runs WHERE journal = %s AND run_id = ANY(%s) "
            "AND phase = ANY(%s)",
            (topics.events, list(runs), list(TERMINAL)),
            lambda n: n == len(runs),
        )
        run_id = sorted(runs)[0]
        text, took = forensics("run", run_id, "--topic-prefix", prefix)
        print(text)
        flat = " ".join(text.split())  # wrapped at 100 columns
        # A loose bound on a shared machine; bench/forensics_1m.py measures it properly.
        assert took < 20, f"forensics run took {took:.1f} s"
        assert f"Run {run_id} (tenant t1) completed" in flat
        assert "no side effect happened twice" in flat
        assert (
            "it timed out after 2.0 s; retried with the same idempotency key; the gateway "
            "returned the first ticket (TCK-" in flat
        )
        assert "one ticket exists" in flat
        assert "its outcome is unknown: post_note takes no idempotency key" in flat
        for source in ("journal", "intent", "ledger", "gateway"):
            assert f" {source} " in text, source

        story = json.loads(forensics("run", run_id, "--topic-prefix", prefix, "--json")[0])
        calls = {c["tool"]: c for c in story["calls"]}
        assert calls["create_ticket"]["actions"] == 1 and calls["create_ticket"]["retried"]
        assert calls["create_ticket"]["outcome"] == "succeeded"
        assert calls["post_note"]["actions"] == 1 and calls["post_note"]["outcome"] == "unknown"
        assert not any(c["duplicate"] for c in story["calls"])
        seqs = [ln for ln in story["lines"] if ln["source"] == "journal"]
        assert len(seqs) == story["journal"]["events"] >= 8
