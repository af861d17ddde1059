"""`runcoord executor tools`: one tool executor replica."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer

from runcoord import tracing
from runcoord.config import Settings, load
from runcoord.effects.ledger import RedisGuard, connect_redis
from runcoord.effects.limits import ConcurrencyLimiter, Limits
from runcoord.effects.runtime import Handler
from runcoord.effects.serve import (
    ConcurrencyOpt,
    FaultOpt,
    InstanceOpt,
    MetricsOpt,
    PrefixOpt,
    guard,
    serve,
)
from runcoord.registry import Registry, load_registry
from runcoord.tools.executor import KINDS, ToolCalls
from runcoord.tools.http_gateway import HttpToolGateway
from runcoord.tools.routing_gateway import RoutingGateway
from runcoord.transport import gateway_client

log = logging.getLogger(__name__)

GatewayUrlOpt = Annotated[
    str | None,
    typer.Option(help="The tool gateway's base URL (default: RUNCOORD_GATEWAY_URL)."),
]
RegistryOpt = Annotated[
    Path | None, typer.Option(help="The tool registry (default: RUNCOORD_TOOLS_FILE).")
]


def tools(
    instance_id: InstanceOpt = None,
    topic_prefix: PrefixOpt = "",
    gateway_url: GatewayUrlOpt = None,
    registry: RegistryOpt = None,
    per_tenant: Annotated[
        int, typer.Option(help="Tool calls in flight per tenant.")
    ] = Limits.per_tenant,
    concurrency: ConcurrencyOpt = 256,
    fault_at: FaultOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Call tools at most once per tool call, with backpressure per tenant and tool."""
    reg = load_registry(registry or load().tools_file)

    @asynccontextmanager
    async def handler(settings: Settings, owner: str) -> AsyncIterator[Handler]:
        async with tool_calls(settings, owner, reg, gateway_url, per_tenant) as calls:
            yield calls

    serve("tools", KINDS, handler, instance_id, topic_prefix, concurrency, fault_at, metrics_port)


@asynccontextmanager
async def tool_calls(
    settings: Settings,
    owner: str,
    reg: Registry,
    gateway_url: str | None = None,
    per_tenant: int = Limits.per_tenant,
) -> AsyncIterator[Handler]:
    """The tool executor's handler: its gateways, its share of the fleet's concurrency limits
    and its own ledger connection."""
    redis_guard = RedisGuard(connect_redis(settings.redis))
    limiter = ConcurrencyLimiter(redis_guard, Limits(per_tenant=per_tenant), holder=owner)
    await asyncio.to_thread(limiter.join)  # from here on, permits are taken without I/O
    # One MCP session per server, opened on the first call and kept (none if no tool
    # in the registry is on an MCP server).
    mcp = None
    if reg.mcp_servers:
        # Imported only when used: the MCP SDK takes a second to import.
        from runcoord.tools.mcp_gateway import McpToolGateway

        mcp = McpToolGateway(reg.mcp_servers)
    for name, server in reg.mcp_servers.items():
        log.info("tools on MCP server %s at %s", name, server.url)
    try:
        async with (
            gateway_client(event_hooks=tracing.httpx_event_hooks()) as http,
            guard(settings, owner) as calls_guard,
        ):
            yield ToolCalls(
                reg,
                RoutingGateway(HttpToolGateway(gateway_url or settings.gateway_url, http), mcp),
                calls_guard,
                limiter,
                owner,
                hedge_after_ms=settings.tool_hedge_ms or None,
            )
    finally:
        limiter.close()  # leave the fleet now: the others' shares grow back at once
        if mcp is not None:
            await mcp.aclose()
