"""A replay's private world on the shared stack: its own database and topic prefix.

Each system replayed gets a fresh PostgreSQL database (the gateway's audit log and the
effect ledger start empty, and another engineer's tests never see our rows) and a fresh
topic prefix. Both are removed at the end; the evidence is saved to files first.
"""

from __future__ import annotations

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg import conninfo, sql

from runcoord.config import Settings
from runcoord.db import migrate
from runcoord.errors import StackError
from runcoord.kafka import TopicNames
from runcoord.topics import Level, apply, delete, load_specs


def database_dsn(dsn: str, name: str) -> str:
    return conninfo.make_conninfo(dsn, dbname=name)


def create_database(dsn: str, name: str) -> str:
    """Create database ``name`` on ``dsn``'s server, migrate it, and return its DSN."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    own = database_dsn(dsn, name)
    migrate(own)
    return own


def drop_database(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_topics(
    settings: Settings, prefix: str, extra: dict[str, int] | None = None
) -> list[str]:
    """runcoord's topics (topics.yaml) under ``prefix``, plus ``extra`` name -> partitions."""
    findings = apply(settings.bootstrap, load_specs(settings.topics_file), prefix)
    errors = [f for f in findings if f.level is Level.ERROR]
    if errors:
        raise StackError(f"creating topics under {prefix!r}: {errors}")
    names = list(TopicNames.with_prefix(prefix).all())
    if extra:
        admin = AdminClient({"bootstrap.servers": settings.bootstrap, "log_level": 0})
        new = [
            NewTopic(f"{prefix}{n}", num_partitions=p, replication_factor=1)
            for n, p in extra.items()
        ]
        for future in admin.create_topics(new).values():
            future.result(timeout=30)
        names += [f"{prefix}{n}" for n in extra]
    return names


def delete_topics(settings: Settings, names: list[str]) -> None:
    delete(settings.bootstrap, names)


def groups_settled(bootstrap: str, groups: dict[str, int]) -> str | None:
    """None once each group is stable with its members and every partition assigned."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    futures = admin.describe_consumer_groups(list(groups))
    for group, expected in groups.items():
        try:
            description = futures[group].result(timeout=10)
        except Exception as exc:  # not known to the coordinator yet
            return f"{group}: {exc}"
        members = description.members or []
        if str(description.state).split(".")[-1] != "STABLE" or len(members) != expected:
            return f"{group}: {description.state}, {len(members)}/{expected} members"
        if any(not m.assignment.topic_partitions for m in members):
            return f"{group}: a member has no partitions yet"
    return None
