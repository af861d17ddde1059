"""The topics declared in topics.yaml: load them, create the missing ones, report drift.

``load_specs`` and ``drift`` are pure (unit-tested without a broker); ``apply`` and
``verify`` talk to Kafka. ``apply`` creates the missing topics and sets the declared
configs an existing one lacks, but never changes a partition count, since that would move
runs to other partitions (co-partitioning by run_id is a correctness property, not a
tuning), nor a replication factor.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from confluent_kafka import KafkaError, KafkaException

# The documented import path; confluent_kafka.admin re-exports these without __all__.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from rich.text import Text

from runcoord.config import load
from runcoord.errors import ConfigError, KafkaRetriable
from runcoord.kafka import translate
from runcoord.stack.console import exits_cleanly, out
from runcoord.stack.polling import NotReadyInTime, wait_until

CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete"})
_REQUIRED = (
    "keyed_by_run_id",
    "partitions",
    "replication_factor",
    "min_insync_replicas",
    "cleanup_policy",
    "retention_ms",
)
_OPTIONAL = ("configs",)
# How long apply looks again at an error right after its own change (see _settled).
_SETTLE_S = 10.0


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TopicSpec:
    name: str
    keyed_by_run_id: bool
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    cleanup_policy: str
    retention_ms: int
    configs: Mapping[str, str] = field(default_factory=dict)  # any further topic configs

    def prefixed(self, prefix: str) -> str:
        return f"{prefix}{self.name}"

    def kafka_configs(self, min_insync_replicas: int) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(min_insync_replicas),
            **self.configs,
        }


def load_specs(path: Path) -> list[TopicSpec]:
    """Read and validate topics.yaml; ConfigError says which topic and key is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist (set RUNCOORD_TOPICS_FILE)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_specs(data, source=str(path))


def parse_specs(data: Any, *, source: str = "topics.yaml") -> list[TopicSpec]:
    if not isinstance(data, dict) or not isinstance(data.get("topics"), dict):
        raise ConfigError(f"{source}: expected a mapping with a 'topics' mapping")
    specs = [_parse_topic(name, body, source) for name, body in data["topics"].items()]
    counts = {s.name: s.partitions for s in specs if s.keyed_by_run_id}
    if len(set(counts.values())) > 1:
        raise ConfigError(
            f"{source}: run-keyed topics must have the same partition count "
            f"(co-partitioned by run_id), got {counts}"
        )
    return specs


def _parse_topic(name: Any, body: Any, source: str) -> TopicSpec:
    where = f"{source}: topic {name!r}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: the name must be a non-empty string")
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping of settings")
    unknown = set(body) - set(_REQUIRED) - set(_OPTIONAL)
    missing = [key for key in _REQUIRED if key not in body]
    if unknown or missing:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}, missing keys {missing}")

    def integer(key: str, minimum: int) -> int:
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{where}: {key} must be an integer >= {minimum}, not {value!r}")
        return value

    if not isinstance(body["keyed_by_run_id"], bool):
        raise ConfigError(f"{where}: keyed_by_run_id must be true or false")
    policy = _normalize_policy(str(body["cleanup_policy"]))
    if policy not in CLEANUP_POLICIES:
        raise ConfigError(f"{where}: cleanup_policy must be one of {sorted(CLEANUP_POLICIES)}")
    configs = body.get("configs") or {}
    if not isinstance(configs, dict):
        raise ConfigError(f"{where}: configs must be a mapping of Kafka topic configs")
    spec = TopicSpec(
        name=name,
        keyed_by_run_id=body["keyed_by_run_id"],
        partitions=integer("partitions", 1),
        replication_factor=integer("replication_factor", 1),
        min_insync_replicas=integer("min_insync_replicas", 1),
        cleanup_policy=policy,
        retention_ms=integer("retention_ms", -1),
        configs={str(k): str(v) for k, v in configs.items()},
    )
    if spec.min_insync_replicas > spec.replication_factor:
        raise ConfigError(f"{where}: min_insync_replicas exceeds replication_factor")
    return spec


def _normalize_policy(value: str) -> str:
    # Kafka reports "compact,delete" or "delete,compact" as it was set; they mean the same.
    return ",".join(sorted(part.strip() for part in value.split(",")))


# --------------------------------------------------------------------------- findings


class Level(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    level: Level
    topic: str
    message: str


@dataclass(frozen=True)
class ObservedTopic:
    """A topic as the cluster describes it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


def effective_replication(spec: TopicSpec, brokers: int) -> tuple[int, int, list[Finding]]:
    """(replication factor, min ISR) this cluster can give ``spec``, and a warning if clamped."""
    if spec.replication_factor <= brokers:
        return spec.replication_factor, spec.min_insync_replicas, []
    rf = brokers
    # Keep one replica of slack where there is any, so one broker down does not stop writes.
    min_isr = min(spec.min_insync_replicas, max(1, rf - 1))
    warning = Finding(
        Level.WARNING,
        spec.name,
        f"replication {spec.replication_factor} / min ISR {spec.min_insync_replicas} "
        f"clamped to {rf} / {min_isr} (the cluster has {brokers} broker(s))",
    )
    return rf, min_isr, [warning]


def drift(
    specs: list[TopicSpec],
    observed: Mapping[str, ObservedTopic],
    *,
    brokers: int,
    prefix: str = "",
) -> list[Finding]:
    """Every difference between the declared topics and the ``observed`` ones (pure)."""
    findings: list[Finding] = []
    for spec in specs:
        name = spec.prefixed(prefix)
        rf, min_isr, clamped = effective_replication(spec, brokers)
        findings += [Finding(f.level, name, f.message) for f in clamped]
        topic = observed.get(name)
        if topic is None:
            findings.append(Finding(Level.ERROR, name, "missing (`runcoord topics apply`)"))
            continue
        if topic.partitions != spec.partitions:
            findings.append(
                Finding(
                    Level.ERROR,
                    name,
                    f"has {topic.partitions} partitions, topics.yaml declares "
                    f"{spec.partitions}; apply never changes partition counts: recreate the "
                    "topic (or fix topics.yaml) on purpose",
                )
            )
        if topic.replication_factor < rf:
            findings.append(
                Finding(
                    Level.ERROR,
                    name,
                    f"replication factor {topic.replication_factor} is below {rf}: "
                    "reassign its partitions",
                )
            )
        for key, (have, want) in stale_configs(spec, topic, min_isr).items():
            findings.append(
                Finding(Level.ERROR, name, f"config {key} is {have}, topics.yaml says {want}")
            )
    keyed = {
        spec.prefixed(prefix): observed[spec.prefixed(prefix)].partitions
        for spec in specs
        if spec.keyed_by_run_id and spec.prefixed(prefix) in observed
    }
    if len(set(keyed.values())) > 1:
        findings.append(
            Finding(
                Level.ERROR,
                "*",
                f"run-keyed topics are not co-partitioned (same count needed): {keyed}",
            )
        )
    return findings


def stale_configs(
    spec: TopicSpec, topic: ObservedTopic, min_isr: int
) -> dict[str, tuple[str | None, str]]:
    """The declared configs the topic does not have: key -> (what it has, what is declared)."""
    stale: dict[str, tuple[str | None, str]] = {}
    for key, want in spec.kafka_configs(min_isr).items():
        have = topic.configs.get(key)
        if key == "cleanup.policy" and have is not None:
            have = _normalize_policy(have)
        if have != want:
            stale[key] = (have, want)
    return stale


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level is Level.ERROR for f in findings)


# --------------------------------------------------------------------------- against Kafka


def _admin(bootstrap: str) -> tuple[AdminClient, int]:
    """An admin client and the number of brokers, or an error saying Kafka did not answer."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise KafkaRetriable(
            f"Kafka at {bootstrap} did not answer ({translate(exc)}): is the stack up "
            "(`runcoord stack up`), or is RUNCOORD_BOOTSTRAP_SERVERS right?"
        ) from exc
    return admin, len(metadata.brokers)


def describe(admin: AdminClient, names: list[str]) -> dict[str, ObservedTopic]:
    """The ``names`` that exist, with partitions, replication factor and configs."""
    metadata = admin.list_topics(timeout=10)
    present = [n for n in names if n in metadata.topics and metadata.topics[n].error is None]
    if not present:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in present])
    observed = {}
    try:
        for resource, future in futures.items():
            entries = future.result(timeout=10)
            topic = metadata.topics[resource.name]
            first = topic.partitions[min(topic.partitions)] if topic.partitions else None
            observed[resource.name] = ObservedTopic(
                name=resource.name,
                partitions=len(topic.partitions),
                replication_factor=len(first.replicas) if first else 0,
                configs={key: str(entry.value) for key, entry in entries.items()},
            )
    except KafkaException as exc:
        raise translate(exc) from exc
    return observed


def verify(bootstrap: str, specs: list[TopicSpec], prefix: str = "") -> list[Finding]:
    """Drift between ``specs`` (with ``prefix``) and the cluster at ``bootstrap``."""
    admin, brokers = _admin(bootstrap)
    observed = describe(admin, [s.prefixed(prefix) for s in specs])
    return drift(specs, observed, brokers=brokers, prefix=prefix)


def apply(bootstrap: str, specs: list[TopicSpec], prefix: str = "") -> list[Finding]:
    """Create the missing topics, then verify all of them; returns every finding."""
    admin, brokers = _admin(bootstrap)
    existing = describe(admin, [s.prefixed(prefix) for s in specs])
    new_topics = []
    for spec in specs:
        if spec.prefixed(prefix) in existing:
            continue
        rf, min_isr, _ = effective_replication(spec, brokers)
        new_topics.append(
            NewTopic(
                spec.prefixed(prefix),
                num_partitions=spec.partitions,
                replication_factor=rf,
                config=spec.kafka_configs(min_isr),
            )
        )
    created: list[Finding] = []
    if new_topics:
        for name, future in admin.create_topics(new_topics, request_timeout=30).items():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                # Created meanwhile (another apply, or metadata that lagged): verify judges it.
                if _code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise translate(exc) from exc
            else:
                created.append(Finding(Level.INFO, name, "created"))
        _wait_visible(admin, [t.topic for t in new_topics])
    aligned = _align_configs(admin, specs, existing, brokers, prefix)
    return (
        created + aligned + _settled(bootstrap, specs, prefix, changed=bool(new_topics or aligned))
    )


def _settled(
    bootstrap: str, specs: list[TopicSpec], prefix: str, *, changed: bool
) -> list[Finding]:
    """``verify``, after a change once the brokers show it. The controller answers a create
    or a config change before every broker has applied it, so a describe right after can
    still show the old state (CI saw it once): an error is looked at again, for up to
    ``_SETTLE_S``, before it is reported."""
    findings = verify(bootstrap, specs, prefix)
    deadline = time.monotonic() + (_SETTLE_S if changed else 0.0)
    while has_errors(findings) and time.monotonic() < deadline:
        time.sleep(0.2)
        findings = verify(bootstrap, specs, prefix)
    return findings


def _align_configs(
    admin: AdminClient,
    specs: list[TopicSpec],
    existing: Mapping[str, ObservedTopic],
    brokers: int,
    prefix: str,
) -> list[Finding]:
    """Set the declared configs an existing topic lacks (an upgrade that declares a new one,
    say). Only the declared keys change, one by one (incremental): a config changes no
    partition, unlike a partition count, which apply never touches."""
    changes: dict[str, dict[str, tuple[str | None, str]]] = {}
    for spec in specs:
        topic = existing.get(spec.prefixed(prefix))
        if topic is not None:
            stale = stale_configs(spec, topic, effective_replication(spec, brokers)[1])
            if stale:
                changes[topic.name] = stale
    if not changes:
        return []
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, want, incremental_operation=AlterConfigOpType.SET)
                for key, (_, want) in stale.items()
            ],
        )
        for name, stale in changes.items()
    ]
    findings: list[Finding] = []
    for resource, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            # verify, run next, reports the config as still different.
            findings.append(Finding(Level.WARNING, resource.name, f"configs not set: {exc}"))
            continue
        for key, (have, want) in changes[resource.name].items():
            findings.append(Finding(Level.INFO, resource.name, f"config {key}: {have} -> {want}"))
    return findings


def _wait_visible(admin: AdminClient, names: list[str]) -> None:
    # CreateTopics returns when the controller has the topic; brokers' metadata follows.
    def check() -> str | None:
        topics = admin.list_topics(timeout=5).topics
        missing = [n for n in names if n not in topics or topics[n].error is not None]
        return f"not in metadata yet: {missing}" if missing else None

    try:
        wait_until(check, timeout=30, what="created topics")
    except NotReadyInTime as exc:
        raise KafkaRetriable(str(exc)) from exc


def delete(bootstrap: str, names: list[str]) -> None:
    """Delete topics (tests clean up their prefixed sets); missing ones are ignored."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.delete_topics(names, request_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if _code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise translate(exc) from exc


def _code(exc: KafkaException) -> int | None:
    err = exc.args[0] if exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


# --------------------------------------------------------------------------- CLI

app = typer.Typer(no_args_is_help=True)

_STYLE = {Level.INFO: "green", Level.WARNING: "yellow", Level.ERROR: "bold red"}

Prefix = Annotated[str, typer.Option(help="Prepended to every topic name (e.g. 't123.').")]
File = Annotated[Path | None, typer.Option(help="The topics file (default RUNCOORD_TOPICS_FILE).")]
Bootstrap = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers (default from the settings).")
]


def _report(findings: list[Finding], ok_message: str) -> None:
    for f in findings:
        label = Text(f"{f.level.upper():7} ", style=_STYLE[f.level])
        out.print(label + Text(f"{f.topic}: {f.message}"), soft_wrap=True, highlight=False)
    if has_errors(findings):
        raise typer.Exit(1)
    out.print(ok_message, markup=False, highlight=False)


def _inputs(file: Path | None, bootstrap: str | None) -> tuple[list[TopicSpec], str]:
    settings = load()
    return load_specs(file or settings.topics_file), bootstrap or settings.bootstrap


@app.command("apply")
@exits_cleanly
def apply_command(prefix: Prefix = "", file: File = None, bootstrap: Bootstrap = None) -> None:
    """Create the topics that are missing; report drift in the others (exit 1 on errors)."""
    specs, servers = _inputs(file, bootstrap)
    _report(apply(servers, specs, prefix), f"ok: {len(specs)} topics as declared")


@app.command("verify")
@exits_cleanly
def verify_command(prefix: Prefix = "", file: File = None, bootstrap: Bootstrap = None) -> None:
    """Report every difference from topics.yaml (exit 1 on errors); changes nothing."""
    specs, servers = _inputs(file, bootstrap)
    _report(verify(servers, specs, prefix), f"ok: {len(specs)} topics match the declaration")
