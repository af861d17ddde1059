"""One replica hosting every executor kind (``executor all``) keeps each kind's own bound."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from runcoord.kafka import TopicNames
from tests.integration.e2e import SDK_WARNINGS, assert_one_action_per_call, launch, turns

pytestmark = [pytest.mark.integration, *SDK_WARNINGS]

HELD_S = 0.6  # the gateway holds every tool request this long (below every timeout)


def test_a_full_tool_lane_runs_one_call_at_a_time_and_holds_up_no_other(
    bootstrap: str, pg_dsn: str, topics: TopicNames, tmp_path: Path
) -> None:
    args = ["--tools-concurrency", "1"]
    with launch(bootstrap, pg_dsn, topics, tmp_path, executors="all", executor_args=args) as s:
        s.gateway_faults({"seed": 1, "global": {"latency": {"rate": 1.0, "ms": HELD_S * 1000}}})
        runs = turns(4, "lanes")
        s.start_turns(runs)
        finished = s.wait_finished(set(runs), timeout=120)
        assert {r: st for r, (st, _) in finished.items()} == dict.fromkeys(runs, "completed")
        assert_one_action_per_call(s, set(runs))
        # The tool lane's bound held: each call began after the one before was answered
        # (every intent queued behind a full lane, none dropped, none run beside it). A
        # call's own requests (a hedge of a read, a retry) are its one place in the lane.
        first: dict[str, float] = {}
        for a in s.arrivals(set(runs)):
            first[a["tool_call_id"]] = min(a["at"], first.get(a["tool_call_id"], a["at"]))
        assert len(first) == 3 * len(runs)
        began = sorted(first.values())
        gaps = [b - a for a, b in pairwise(began)]
        assert min(gaps) >= HELD_S * 0.9, gaps
        # ...and the other lanes did not wait for it: steps were submitted while the tool
        # lane held another call (one bound for the whole replica would have kept them apart).
        sent = [
            sub["at"]
            for sub in s.records()["submissions"]
            if sub["accepted"] and set(sub["tool_call_ids"]) & set(first)
        ]
        beside = [t for t in sent if any(b < t < b + HELD_S * 0.9 for b in began)]
        assert beside, (sent, began)
