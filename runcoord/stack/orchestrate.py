"""The whole stack: which components there are, and bringing them all up or down together."""

from __future__ import annotations

import errno
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runcoord.config import Settings
from runcoord.errors import RuncoordError, StackError
from runcoord.stack import postgres_server, redis_server
from runcoord.stack.component import Component, ComponentStatus, ExternalService, Say
from runcoord.stack.kafka_broker import KafkaCluster
from runcoord.stack.kafka_probe import answers_metadata, transactions_unready
from runcoord.stack.paths import StackPaths
from runcoord.stack.postgres_server import PostgresServer
from runcoord.stack.preflight import check_state_dir
from runcoord.stack.redis_server import RedisServer

DEFAULT_TIMEOUT = 120.0


def components(settings: Settings, brokers: int | None = None) -> list[Component]:
    """Kafka, PostgreSQL, Redis: a local process each, or the server the settings name."""
    kafka: Component
    if settings.bootstrap_servers:
        b = settings.bootstrap_servers
        kafka = ExternalService(
            "kafka",
            b,
            lambda: answers_metadata(b),
            ready=lambda: answers_metadata(b) or transactions_unready(b),
        )
    else:
        kafka = KafkaCluster(settings, brokers)
    postgres: Component = (
        ExternalService("postgres", "RUNCOORD_POSTGRES_DSN", lambda: postgres_server.probe(dsn))
        if (dsn := settings.postgres_dsn)
        else PostgresServer(settings)
    )
    cache: Component = (
        ExternalService("redis", url, lambda: redis_server.probe(url))
        if (url := settings.redis_url)
        else RedisServer(settings)
    )
    return [kafka, postgres, cache]


def up(
    settings: Settings, say: Say, *, brokers: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Start what is not running and wait until all of it is healthy; idempotent."""
    check_state_dir(StackPaths.of(settings).root)
    parts = components(settings, brokers)
    # In parallel: Kafka's JVM takes seconds to start while PostgreSQL and Redis get
    # installed (on a new machine) and started.
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        futures = [(c.name, pool.submit(_up_one, c, timeout, say)) for c in parts]
    failures = [f"{name}: {fut.exception()}" for name, fut in futures if fut.exception()]
    if failures:
        raise StackError("the stack is not up:\n" + "\n\n".join(failures))


def _up_one(component: Component, timeout: float, say: Say) -> None:
    try:
        component.up(timeout, say)
    except RuncoordError:
        raise
    except OSError as exc:
        # A full disk or a read-only state folder shows up here, half-way through a start.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise StackError(
                f"cannot write {exc.filename or 'the state folder'} ({exc.strerror}): free "
                "disk space or set RUNCOORD_STATE_DIR to a writable folder"
            ) from exc
        raise


def down(settings: Settings, say: Say, *, purge: bool = False) -> None:
    """Stop exactly what ``up`` started (by pid files); ``purge`` also deletes their data."""
    for component in reversed(components(settings)):
        component.down(say)
    if purge:
        paths = StackPaths.of(settings)
        doomed: list[Path] = [*paths.kafka.glob("broker-*"), paths.kafka_cluster_file]
        doomed += [paths.postgres, paths.redis]
        for path in doomed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        say(f"purged data under {paths.root} (kept the Kafka jar cache)")


def status(settings: Settings) -> list[ComponentStatus]:
    return [row for component in components(settings) for row in component.status()]


def log_files(settings: Settings) -> dict[str, Path]:
    return {name: path for c in components(settings) for name, path in c.logs().items()}
