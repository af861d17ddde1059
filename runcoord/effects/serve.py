"""One executor replica, whatever its kind: the plumbing the provider, tool and submission
executors share (settings, logs, traces, metrics, the fault hook, the ledger, reclaiming a dead
incarnation's leases, the consumer loop, stopping on a signal). Each kind's command lives beside
its handler: runcoord/provider/cli.py, runcoord/tools/cli.py, runcoord/submitter/cli.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import typer

from runcoord import faults, logs, metrics, tracing
from runcoord.config import Settings, load
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import (
    AsyncPostgresLedger,
    LedgerError,
    PostgresLedger,
    RedisGuard,
    connect_redis,
)
from runcoord.effects.limits import ConcurrencyLimiter, Limits
from runcoord.effects.runtime import Executor, ExecutorConfig
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames

log = logging.getLogger("runcoord.executor")

# Options every executor kind takes. A default of None means "the setting decides"
# (runcoord/config.py), so no default is written twice.
InstanceOpt = Annotated[
    str | None,
    typer.Option(
        help="Replica name (tools-0…), unique among the live replicas of its kind; default "
        "host-pid. A replica restarted under its name takes its dead predecessor's effects "
        "back at once instead of waiting out their leases."
    ),
]
PrefixOpt = Annotated[str, typer.Option(help="Prefix of every topic name.")]
ConcurrencyOpt = Annotated[int, typer.Option(help="Intents in flight at most.")]
MetricsOpt = Annotated[
    int | None,
    typer.Option(help="Serve Prometheus /metrics here (default: RUNCOORD_METRICS_PORT, else off)."),
]
FaultOpt = Annotated[
    str | None,
    typer.Option(help="Test hook: kill|stop|hang@POINT[:N] (default: RUNCOORD_FAULT_AT)."),
]


@asynccontextmanager
async def guard(settings: Settings, owner: str) -> AsyncIterator[LedgerGuard]:
    """A handler's guard, claiming as ``owner`` on a ledger connection of its own, on the
    executor's event loop (connected on first use, closed on leaving)."""
    async with AsyncPostgresLedger(settings.dsn) as led:
        yield LedgerGuard(led, owner)


def reclaim(settings: Settings, replica: str, incarnation: str) -> None:
    """Take back what this replica held when it died: its effects' leases lapse and its
    concurrency slots are freed now, not in 30 s.

    Only what this replica's own name holds is touched, and a replica is restarted only once
    it is dead, so none of it has a live holder; the take-over that follows fences and
    reconciles exactly as after a lease that ran out. Best effort: without it they lapse.
    """
    guard = RedisGuard(connect_redis(settings.redis))
    freed = ConcurrencyLimiter(guard, Limits()).reclaim(replica, incarnation)
    if freed:
        log.info("%s: dropped %d limiter memberships of its earlier incarnations", replica, freed)
    ledger = PostgresLedger(settings.dsn)
    try:
        lapsed = ledger.reclaim(replica, incarnation)
    except LedgerError as exc:
        log.warning("%s: earlier leases not reclaimed (%s); they lapse on their own", replica, exc)
        return
    finally:
        ledger.close()
    if lapsed:
        log.info("%s: took back %d effects of its earlier incarnations", replica, len(lapsed))


def serve(
    name: str,
    kinds: frozenset[str],
    make_handler: Callable[[Settings, str], Any],
    instance_id: str | None,
    topic_prefix: str,
    concurrency: int,
    fault_at: str | None,
    metrics_port: int | None,
) -> None:
    """Run one replica of executor `name` until SIGTERM/SIGINT."""
    settings = load()
    logs.setup()
    try:
        tracing.setup(f"runcoord-executor-{name}")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    metrics.serve(metrics_port)
    faults.configure(fault_at)
    owner = instance_id or f"{name}-{socket.gethostname()}-{os.getpid()}"
    group = f"{topic_prefix}runcoord-executor-{name}"
    # The replica is its name within its consumer group (as a static group member's id).
    # A claim is never re-entrant, so the ledger owner must be unique per incarnation.
    replica = f"{group}/{owner}"
    incarnation = f"{replica}/{os.getpid()}/{int(time.time())}"
    config = ExecutorConfig(
        bootstrap=settings.bootstrap,
        name=name,
        kinds=kinds,
        topics=TopicNames.with_prefix(topic_prefix),
        group_id=group,
        instance_id=owner,
        concurrency=concurrency,
        static_membership=instance_id is not None,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    async def main() -> None:
        await asyncio.to_thread(reclaim, settings, replica, incarnation)
        async with make_handler(settings, incarnation) as handler:
            executor = Executor(config, handler)
            log.info("executor %s (%s) up, kinds %s", owner, name, sorted(kinds))
            await executor.run_async(stop)

    try:
        asyncio.run(main())
    except ConfigError as exc:  # tools.yaml, providers.yaml…: the file and the reason
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
