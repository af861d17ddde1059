"""The workload generator: the trace's shape, and one seed giving one trace."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from pathlib import Path

import pytest

from runcoord.config import REPO_ROOT
from runcoord.errors import ConfigError
from runcoord.harness.workload.generate import GeneratorConfig, generate
from runcoord.harness.workload.latency import parse_latency
from runcoord.harness.workload.trace import TraceTurn, read_trace, write_trace
from runcoord.registry import Registry, load_registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO_ROOT / "tools.yaml")


@pytest.fixture(scope="module")
def big(registry: Registry) -> list[TraceTurn]:
    return generate(GeneratorConfig(turns=4000, seed=3), registry)


def test_same_seed_same_trace(registry: Registry, tmp_path: Path) -> None:
    a = generate(GeneratorConfig(turns=300, seed=42), registry)
    b = generate(GeneratorConfig(turns=300, seed=42), registry)
    c = generate(GeneratorConfig(turns=300, seed=43), registry)
    assert a == b
    assert a != c
    write_trace(tmp_path / "a.jsonl", a)
    write_trace(tmp_path / "b.jsonl", b)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert read_trace(tmp_path / "a.jsonl") == a


def test_tool_mix_and_calls_per_turn(big: list[TraceTurn], registry: Registry) -> None:
    calls = [c for t in big for c in t.script.calls()]
    writes = sum(1 for c in calls if registry.tools[c.name].write)
    assert 0.42 <= writes / len(calls) <= 0.48
    per_turn = [len(t.script.calls()) for t in big]
    assert statistics.median(per_turn) == 1
    assert set(per_turn) <= {0, 1, 2, 3, 4}
    assert {0, 1, 2, 3, 4} <= set(per_turn)
    steps = Counter(len(t.script.steps) + 1 for t in big)  # tool steps + the final answer
    assert set(steps) == {1, 2, 3}


def test_tenants_only_write_what_tools_yaml_enables(
    big: list[TraceTurn], registry: Registry
) -> None:
    tenants = Counter(t.tenant for t in big)
    assert set(tenants) == {"t1", "t2", "t3", "t4", "t5"}
    for turn in big:
        for call in turn.script.calls():
            tool = registry.tools[call.name]
            if tool.write:
                assert turn.tenant in tool.tenants, (turn.turn_id, call.name)


def test_conversations_are_sequential_and_offsets_ordered(big: list[TraceTurn]) -> None:
    offsets = [t.offset_ms for t in big]
    assert offsets == sorted(offsets)
    by_conversation: dict[str, list[TraceTurn]] = {}
    for turn in big:
        by_conversation.setdefault(turn.conversation, []).append(turn)
    multi = [ts for ts in by_conversation.values() if len(ts) > 1]
    assert len(multi) > len(by_conversation) / 5  # several turns per conversation is common
    for turns in multi:
        assert len({t.tenant for t in turns}) == 1
        for earlier, later in itertools.pairwise(turns):
            # The next turn starts after the previous one's model time at the earliest.
            assert later.offset_ms >= earlier.offset_ms + earlier.script.model_ms() - 1


def test_rate_and_latency_distribution(registry: Registry) -> None:
    trace = generate(
        GeneratorConfig(turns=3000, seed=5, rate=50.0, latency=parse_latency("fixed:ms=123")),
        registry,
    )
    span_s = trace[-1].offset_ms / 1000
    assert 3000 / span_s == pytest.approx(50.0, rel=0.15)
    latencies = {s.latency_ms for t in trace for s in t.script.steps}
    assert latencies == {123.0}


def test_lognormal_median_is_the_configured_one(registry: Registry) -> None:
    trace = generate(
        GeneratorConfig(
            turns=3000, seed=9, latency=parse_latency("lognormal:median=400,sigma=0.5")
        ),
        registry,
    )
    finals = [t.script.final.latency_ms for t in trace]
    assert statistics.median(finals) == pytest.approx(400, rel=0.08)


def test_resubmission_marks_and_repeats(registry: Registry) -> None:
    trace = generate(
        GeneratorConfig(turns=3000, seed=11, resubmit_share=0.05, repeat_share=0.2), registry
    )
    marked = [t for t in trace if t.resubmit_after_ms is not None]
    assert 0.03 * 3000 < len(marked) < 0.07 * 3000
    payloads = Counter(
        (t.conversation, c.name, str(sorted(c.arguments.items())))
        for t in trace
        for c in t.script.calls()
        if registry.tools[c.name].write
    )
    assert any(n > 1 for n in payloads.values())  # planted legitimate repeats


@pytest.mark.parametrize(
    "spec",
    ["gauss:mu=1", "lognormal:median=400", "fixed:ms=abc", "exponential:mean=1,foo=2", "fixed:ms"],
)
def test_bad_latency_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_latency(spec)


def test_a_bad_trace_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"turn_id": "a", "tenant": "t1"}\n')
    with pytest.raises(ConfigError, match=r"t.jsonl:1"):
        read_trace(path)
