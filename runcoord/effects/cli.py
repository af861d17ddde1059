"""`runcoord executor provider|tools|submissions`: one executor replica of a kind."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runcoord import faults, logs, metrics, tracing
from runcoord.config import REPO_ROOT, Settings, load
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import (
    CachedLedger,
    LedgerError,
    PostgresLedger,
    RedisGuard,
    connect_redis,
)
from runcoord.effects.limits import ConcurrencyLimiter, Limits
from runcoord.effects.runtime import Executor, ExecutorConfig, Handler
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames
from runcoord.provider.assistants import AssistantsProvider
from runcoord.provider.executor import KINDS as PROVIDER_KINDS
from runcoord.provider.executor import ProviderEffects
from runcoord.provider.port import RunProvider
from runcoord.provider.responses import OBSERVE_MODES, Observe, ResponsesProvider
from runcoord.registry import Registry, load_registry
from runcoord.submitter.executor import KINDS as SUBMISSION_KINDS
from runcoord.submitter.executor import Submissions
from runcoord.tools.executor import KINDS as TOOL_KINDS
from runcoord.tools.executor import ToolCalls

log = logging.getLogger("runcoord.executor")
app = typer.Typer(no_args_is_help=True)

InstanceOpt = Annotated[
    str | None,
    typer.Option(
        help="Replica name (tools-0…), unique among the live replicas of its kind; default "
        "host-pid. A replica restarted under its name takes its dead predecessor's effects "
        "back at once instead of waiting out their leases."
    ),
]
PrefixOpt = Annotated[str, typer.Option(help="Prefix of every topic name.")]
ProviderUrlOpt = Annotated[
    str, typer.Option(envvar="RUNCOORD_PROVIDER_URL", help="The provider's base URL (…/v1).")
]
ApiKeyOpt = Annotated[str, typer.Option(envvar="OPENAI_API_KEY", help="The provider's API key.")]
ConcurrencyOpt = Annotated[int, typer.Option(help="Intents in flight at most.")]
MetricsOpt = Annotated[
    int | None,
    typer.Option(envvar="RUNCOORD_METRICS_PORT", help="Serve Prometheus /metrics here."),
]
FaultOpt = Annotated[
    str | None,
    typer.Option(envvar="RUNCOORD_FAULT_AT", help="Test hook: kill|stop|hang@POINT[:N]."),
]


def provider(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    provider_url: ProviderUrlOpt = "http://127.0.0.1:8390/v1",
    api_key: ApiKeyOpt = "sk-local",
    concurrency: ConcurrencyOpt = 512,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
    observe: Annotated[
        str,
        typer.Option(
            help="How a Responses run is watched: poll (retrieve with backoff) or stream "
            "(its event stream, resumed after a drop)."
        ),
    ] = "poll",
) -> None:
    """Create provider runs (at most one per turn), watch them, cancel them."""
    if observe not in OBSERVE_MODES:
        raise typer.BadParameter(f"--observe: one of {', '.join(OBSERVE_MODES)}")

    @asynccontextmanager
    async def handler(settings: Settings, owner: str) -> AsyncIterator[Handler]:
        async with _providers(provider_url, api_key, observe) as providers:
            yield ProviderEffects(providers, LedgerGuard(_ledger(settings), owner))

    _serve(
        "provider",
        PROVIDER_KINDS,
        handler,
        instance_id,
        topic_prefix,
        concurrency,
        fault_at,
        metrics_port,
    )


def submissions(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    provider_url: ProviderUrlOpt = "http://127.0.0.1:8390/v1",
    api_key: ApiKeyOpt = "sk-local",
    concurrency: ConcurrencyOpt = 256,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Submit each step's outputs exactly once, reconciling after unknown outcomes."""

    @asynccontextmanager
    async def handler(settings: Settings, owner: str) -> AsyncIterator[Handler]:
        async with _providers(provider_url, api_key) as providers:
            yield Submissions(providers, LedgerGuard(_ledger(settings), owner))

    _serve(
        "submissions",
        SUBMISSION_KINDS,
        handler,
        instance_id,
        topic_prefix,
        concurrency,
        fault_at,
        metrics_port,
    )


def tools(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    gateway_url: Annotated[
        str, typer.Option(envvar="RUNCOORD_GATEWAY_URL", help="The tool gateway's base URL.")
    ] = "http://127.0.0.1:8391",
    registry: Annotated[Path, typer.Option(help="The tool registry.")] = REPO_ROOT / "tools.yaml",
    per_tenant: Annotated[int, typer.Option(help="Tool calls in flight per tenant.")] = 32,
    concurrency: ConcurrencyOpt = 256,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Call tools at most once per tool call, with backpressure per tenant and tool."""
    reg: Registry = load_registry(registry)

    @asynccontextmanager
    async def handler(settings: Settings, owner: str) -> AsyncIterator[Handler]:
        redis_guard = RedisGuard(connect_redis(settings.redis))
        limiter = ConcurrencyLimiter(redis_guard, Limits(per_tenant=per_tenant), holder=owner)
        async with httpx.AsyncClient(event_hooks=tracing.httpx_event_hooks()) as http:
            yield ToolCalls(
                reg, gateway_url, LedgerGuard(_ledger(settings), owner), http, limiter, owner
            )

    _serve(
        "tools", TOOL_KINDS, handler, instance_id, topic_prefix, concurrency, fault_at, metrics_port
    )


app.command("provider")(provider)
app.command("submissions")(submissions)
app.command("tools")(tools)


@asynccontextmanager
async def _providers(
    url: str, api_key: str, observe: Observe = "poll"
) -> AsyncIterator[dict[str, RunProvider]]:
    """Both protocols; each intent names the one its run uses."""
    tools = load_registry(REPO_ROOT / "tools.yaml").function_tools()
    async with AsyncExitStack() as stack:
        # With tracing on, every provider request carries the intent span's context.
        http = (
            DefaultAsyncHttpxClient(event_hooks=tracing.httpx_event_hooks())
            if tracing.ENABLED
            else None
        )
        client = await stack.enter_async_context(
            AsyncOpenAI(base_url=url, api_key=api_key, http_client=http)
        )
        yield {
            "assistants": AssistantsProvider(client),
            "responses": ResponsesProvider(client, tools=tools, observe=observe),  # type: ignore[arg-type]
        }


def _ledger(settings: Settings) -> CachedLedger:
    # PostgreSQL is the record; Redis only a fast path that may be down.
    return CachedLedger(PostgresLedger(settings.dsn), RedisGuard(connect_redis(settings.redis)))


def _reclaim(settings: Settings, replica: str, incarnation: str) -> None:
    """Take back what this replica held when it died: its effects' leases lapse and its
    concurrency slots are freed now, not in 30 s.

    Only what this replica's own name holds is touched, and a replica is restarted only once
    it is dead, so none of it has a live holder; the take-over that follows fences and
    reconciles exactly as after a lease that ran out. Best effort: without it they lapse.
    """
    guard = RedisGuard(connect_redis(settings.redis))
    freed = ConcurrencyLimiter(guard, Limits()).reclaim(replica, incarnation)
    if freed:
        log.info("%s: freed %d concurrency permits of its earlier incarnations", replica, freed)
    ledger = PostgresLedger(settings.dsn)
    try:
        lapsed = CachedLedger(ledger, guard).reclaim(replica, incarnation)
    except LedgerError as exc:
        log.warning("%s: earlier leases not reclaimed (%s); they lapse on their own", replica, exc)
        return
    finally:
        ledger.close()
    if lapsed:
        log.info("%s: took back %d effects of its earlier incarnations", replica, len(lapsed))


def _serve(
    name: str,
    kinds: frozenset[str],
    make_handler: Callable[[Settings, str], Any],
    instance_id: str | None,
    topic_prefix: str,
    concurrency: int,
    fault_at: str | None,
    metrics_port: int | None,
) -> None:
    logs.setup()
    try:
        tracing.setup(f"runcoord-executor-{name}")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    metrics.serve(metrics_port)
    faults.configure(fault_at)
    settings = load()
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
        await asyncio.to_thread(_reclaim, settings, replica, incarnation)
        async with make_handler(settings, incarnation) as handler:
            executor = Executor(config, handler)
            log.info("executor %s (%s) up, kinds %s", owner, name, sorted(kinds))
            await executor.run_async(stop)

    asyncio.run(main())
