"""The fault plan format: parsing, refusing bad plans, and expanding into a timeline."""

from __future__ import annotations

import pytest

from runcoord.errors import ConfigError
from runcoord.harness.faultplan import expand, load_plan
from runcoord.harness.faultplan.model import parse_plan, parse_when

RUNCOORD = {
    "coordinator": 2,
    "executor-provider": 1,
    "executor-tools": 1,
    "executor-submissions": 1,
}
BASELINE = {"coordinator": 2}


@pytest.mark.parametrize(
    ("raw", "window", "seconds"),
    [(30, 100, 30), ("30s", 100, 30), ("500ms", 100, 0.5), ("2m", 100, 120), ("40%", 50, 20)],
)
def test_times(raw: object, window: float, seconds: float) -> None:
    assert parse_when(raw).seconds(window) == pytest.approx(seconds)


@pytest.mark.parametrize("name", ["none", "incident", "chaos"])
def test_shipped_plans_load(name: str) -> None:
    plan = load_plan(name)
    assert plan.name == name
    expand(plan, 100, RUNCOORD)


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        ({"faults": [{"kind": "meteor", "at": 1}]}, "meteor"),
        ({"faults": [{"kind": "kill", "target": "coordinator", "at": 1}]}, "ROLE:INDEX"),
        ({"faults": [{"kind": "kill", "target": "db:0", "at": 1}]}, "ROLE:INDEX"),
        ({"faults": [{"kind": "provider_latency", "at": "x", "duration": 1}]}, "not a time"),
        ({"faults": [{"kind": "slow_success", "at": 1, "duration": 2, "rate": 2}]}, "rate"),
        (
            {
                "faults": [
                    {"kind": "provider_latency", "at": 1, "duration": 1, "endpoints": ["submitt"]}
                ]
            },
            "submitt",
        ),
        ({"faults": [{"kind": "kill_random", "between": [1], "count": 1}]}, "between"),
        ({"faults": [{"kind": "redis_outage", "at": 1, "duration": 1, "extra": 1}]}, "extra"),
        ({"fault": []}, "fault"),
    ],
)
def test_bad_plans_are_refused(plan: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_plan(plan)


def test_windows_become_on_and_off_actions() -> None:
    plan = parse_plan(
        {
            "faults": [
                {
                    "kind": "slow_success",
                    "at": "10%",
                    "duration": "20%",
                    "rate": 0.5,
                    "ms": 3000,
                    "tools": ["create_ticket"],
                },
                {"kind": "redis_outage", "at": 5, "duration": "3s"},
            ]
        }
    )
    timeline = expand(plan, 200, RUNCOORD)
    kinds = [(a.kind, a.at_s, a.params.get("on")) for a in timeline]
    assert kinds == [
        ("redis_down", 5.0, None),
        ("redis_up", 8.0, None),
        ("gateway_window", 20.0, True),
        ("gateway_window", 60.0, False),
    ]
    on = timeline[2]
    assert on.params["knobs"] == {"slow_success": {"rate": 0.5, "ms": 3000}}
    assert on.params["tools"] == ["create_ticket"]


def test_random_kills_are_the_same_for_both_systems() -> None:
    plan = parse_plan(
        {
            "seed": 4,
            "faults": [
                {
                    "kind": "kill_random",
                    "between": ["10%", "90%"],
                    "count": 6,
                    "restart_after": "1s",
                }
            ],
        }
    )
    ours = expand(plan, 100, RUNCOORD)
    theirs = expand(plan, 100, BASELINE)
    assert [(a.at_s, a.kind, a.label) for a in ours] == [(a.at_s, a.kind, a.label) for a in theirs]
    assert all(a.applicable for a in ours)
    # The baseline has coordinators only: kills of executors are in its timeline, not applied.
    for a in theirs:
        assert a.applicable == a.params["target"].startswith("coordinator:")
    kills = [a for a in ours if a.kind == "kill"]
    restarts = [a for a in ours if a.kind == "restart"]
    assert len(kills) == len(restarts) == 6
    assert all(10 <= a.at_s <= 90 for a in kills)
    assert expand(plan, 100, RUNCOORD) == ours  # the seed decides
