"""The gateway's fault plan: config shape, per-tool override, seeded draws, windows."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from pydantic import ValidationError

import runcoord.sim.tools.faults as faults_module
from runcoord.sim.tools.catalog import TOOLS
from runcoord.sim.tools.faults import FaultConfig, FaultPlan, draw
from tests.fake_time import FakeTime


def test_the_documented_example_parses() -> None:
    doc = faults_module.__doc__ or ""
    example = doc.split("::", 1)[1].split("\n\n")[1]
    config = FaultConfig.model_validate(yaml.safe_load(textwrap.dedent(example)))
    config.check_tools(TOOLS)
    rule = config.rule("create_ticket")
    assert rule.slow_success is not None and rule.slow_success.ms == 3000
    assert rule.latency is not None and rule.latency.rate == 0.1  # inherited from global
    assert config.window_s == 30 and config.seed == 7


def test_a_tool_knob_replaces_the_global_knob_of_the_same_name_only() -> None:
    config = FaultConfig.model_validate(
        {
            "global": {"latency": {"rate": 1, "ms": 5}, "error_before_act": {"rate": 1}},
            "tools": {"search_kb": {"error_before_act": {"rate": 0}}},
        }
    )
    rule = config.rule("search_kb")
    assert rule.error_before_act is not None and rule.error_before_act.rate == 0
    assert rule.latency is not None and rule.latency.ms == 5
    assert config.rule("post_note") == config.global_


@pytest.mark.parametrize(
    "bad",
    [
        {"global": {"latency": {"rate": 1.5}}},
        {"global": {"error_before_act": {"rate": 1, "status": 404}}},
        {"global": {"surprise": {"rate": 1}}},
        {"window_s": 0},
    ],
)
def test_bad_configs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaultConfig.model_validate(bad)


def test_unknown_tools_are_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        FaultConfig.model_validate({"tools": {"nope": {}}}).check_tools(TOOLS)


def test_draws_depend_only_on_their_arguments_and_are_uniform_enough() -> None:
    assert draw(1, "latency", "t", "k", 1) == draw(1, "latency", "t", "k", 1)
    assert draw(1, "latency", "t", "k", 1) != draw(2, "latency", "t", "k", 1)
    values = [draw(3, "x", "t", str(i), 1) for i in range(4000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.45 < sum(v < 0.5 for v in values) / len(values) < 0.55


def test_the_kth_delivery_of_a_request_meets_the_same_fate_whatever_the_interleaving() -> None:
    config = FaultConfig.model_validate({"seed": 5, "global": {"error_before_act": {"rate": 0.5}}})
    deliveries = [f"k{i}" for i in range(10)] * 3

    def fates(order: list[str]) -> dict[str, list[int | None]]:
        plan = FaultPlan(config)
        out: dict[str, list[int | None]] = {}
        for identity in order:
            out.setdefault(identity, []).append(plan.decide("post_note", identity).error_status)
        return out

    forward = fates(deliveries)
    assert forward == fates(list(reversed(deliveries)))
    assert {s for statuses in forward.values() for s in statuses} == {None, 503}


def test_a_window_switches_the_faults_off() -> None:
    now = FakeTime()
    plan = FaultPlan(
        FaultConfig.model_validate({"window_s": 10, "global": {"error_before_act": {"rate": 1}}}),
        clock=now,
    )
    assert plan.decide("post_note", "a").error_status == 503
    now.now = 10.0
    assert plan.decide("post_note", "a").error_status is None
