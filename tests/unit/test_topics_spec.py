"""topics.yaml parsing and drift detection, without a broker."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from runcoord.config import REPO_ROOT
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames
from runcoord.topics import (
    Level,
    ObservedTopic,
    TopicSpec,
    drift,
    effective_replication,
    has_errors,
    load_specs,
    parse_specs,
)

TOPICS_FILE = REPO_ROOT / "topics.yaml"


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "keyed_by_run_id": True,
        "partitions": 6,
        "replication_factor": 3,
        "min_insync_replicas": 2,
        "cleanup_policy": "delete",
        "retention_ms": 1000,
    }
    body.update(changes)
    return body


def _observed(spec: TopicSpec, *, prefix: str = "", **changes: Any) -> ObservedTopic:
    rf, min_isr, _ = effective_replication(spec, brokers=1)
    fields: dict[str, Any] = {
        "name": spec.prefixed(prefix),
        "partitions": spec.partitions,
        "replication_factor": rf,
        "configs": {**spec.kafka_configs(min_isr), "segment.bytes": "1073741824"},
    }
    fields.update(changes)
    return ObservedTopic(**fields)


@pytest.fixture(scope="module")
def specs() -> list[TopicSpec]:
    return load_specs(TOPICS_FILE)


def test_topics_file_declares_exactly_the_topic_names_the_code_uses(
    specs: list[TopicSpec],
) -> None:
    assert sorted(s.name for s in specs) == sorted(TopicNames.with_prefix("").all())


def test_run_keyed_topics_are_co_partitioned(specs: list[TopicSpec]) -> None:
    keyed = {s.name: s.partitions for s in specs if s.keyed_by_run_id}
    assert keyed == {name: 6 for name in ("runs.inbox", "runs.events", "runs.state", "effects")}


def test_journal_and_state_are_kept(specs: list[TopicSpec]) -> None:
    by_name = {s.name: s for s in specs}
    assert by_name["runs.events"].retention_ms == -1
    assert by_name["runs.state"].cleanup_policy == "compact"
    assert by_name["runs.dlq"].retention_ms >= 30 * 24 * 3600 * 1000


def test_topic_names_take_a_prefix() -> None:
    names = TopicNames.with_prefix("t123.")
    assert names.all() == (
        "t123.runs.inbox",
        "t123.runs.events",
        "t123.runs.state",
        "t123.effects",
        "t123.runs.dlq",
    )


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ({"a": _body(partitions=6), "b": _body(partitions=3)}, "same partition count"),
        ({"a": _body(partitions=0)}, "partitions must be an integer >= 1"),
        ({"a": _body(partitions=True)}, "partitions must be an integer"),
        ({"a": _body(cleanup_policy="forever")}, "cleanup_policy"),
        ({"a": _body(min_insync_replicas=4)}, "exceeds replication_factor"),
        ({"a": _body(keyed_by_run_id="yes")}, "keyed_by_run_id"),
        ({"a": _body(replicas=3)}, "unknown keys ['replicas']"),
        ({"a": {k: v for k, v in _body().items() if k != "retention_ms"}}, "retention_ms"),
        ({"a": "not a mapping"}, "expected a mapping"),
    ],
)
def test_invalid_specs_are_refused(topics: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_specs({"topics": topics})


def test_not_run_keyed_topics_may_differ() -> None:
    specs = parse_specs(
        {"topics": {"a": _body(), "dlq": _body(keyed_by_run_id=False, partitions=1)}}
    )
    assert [s.partitions for s in specs] == [6, 1]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_specs(tmp_path / "nope.yaml")


def test_cleanup_policy_order_does_not_matter() -> None:
    (spec,) = parse_specs({"topics": {"a": _body(cleanup_policy="delete,compact")}})
    observed = _observed(
        spec, configs={**spec.kafka_configs(1), "cleanup.policy": "compact,delete"}
    )
    assert not has_errors(drift([spec], {"a": observed}, brokers=1))


# --------------------------------------------------------------------------- drift


def test_no_drift_when_the_cluster_matches(specs: list[TopicSpec]) -> None:
    observed = {s.prefixed("p."): _observed(s, prefix="p.") for s in specs}
    findings = drift(specs, observed, brokers=1, prefix="p.")
    assert not has_errors(findings)
    # ... but the clamping of replication on one broker is said, never silent.
    assert {f.topic for f in findings if f.level is Level.WARNING} == set(observed)


def test_no_clamp_warning_on_three_brokers(specs: list[TopicSpec]) -> None:
    observed = {
        s.name: _observed(s, replication_factor=3, configs=s.kafka_configs(2)) for s in specs
    }
    assert drift(specs, observed, brokers=3) == []


def test_missing_topic_is_an_error(specs: list[TopicSpec]) -> None:
    observed = {s.name: _observed(s) for s in specs if s.name != "runs.state"}
    errors = [f for f in drift(specs, observed, brokers=1) if f.level is Level.ERROR]
    assert [(f.topic, "missing" in f.message) for f in errors] == [("runs.state", True)]


def test_partition_mismatch_of_a_run_keyed_topic_is_an_error(specs: list[TopicSpec]) -> None:
    observed = {s.name: _observed(s) for s in specs}
    observed["runs.events"] = _observed(
        next(s for s in specs if s.name == "runs.events"), partitions=3
    )
    errors = [f for f in drift(specs, observed, brokers=1) if f.level is Level.ERROR]
    assert any(f.topic == "runs.events" and "3 partitions" in f.message for f in errors)
    assert any(f.topic == "*" and "co-partitioned" in f.message for f in errors)


def test_config_drift_is_an_error(specs: list[TopicSpec]) -> None:
    events = next(s for s in specs if s.name == "runs.events")
    observed = {s.name: _observed(s) for s in specs}
    changed = copy.deepcopy(dict(observed["runs.events"].configs))
    changed["retention.ms"] = "604800000"
    observed["runs.events"] = _observed(events, configs=changed)
    errors = [f for f in drift(specs, observed, brokers=1) if f.level is Level.ERROR]
    assert [(f.topic, f.message) for f in errors] == [
        ("runs.events", "config retention.ms is 604800000, topics.yaml says -1")
    ]


def test_replication_below_what_the_cluster_can_give_is_an_error(
    specs: list[TopicSpec],
) -> None:
    observed = {s.name: _observed(s, configs=s.kafka_configs(2)) for s in specs}  # rf 1
    errors = [f for f in drift(specs, observed, brokers=3) if f.level is Level.ERROR]
    assert {f.topic for f in errors} == {s.name for s in specs}
    assert all("replication factor 1 is below 3" in f.message for f in errors)


def test_clamping_keeps_one_replica_of_slack() -> None:
    (spec,) = parse_specs({"topics": {"a": _body()}})
    assert effective_replication(spec, 1)[:2] == (1, 1)
    assert effective_replication(spec, 2)[:2] == (2, 1)
    assert effective_replication(spec, 3) == (3, 2, [])
