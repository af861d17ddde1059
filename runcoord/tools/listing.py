"""The MCP tools' schemas, from their servers' ``tools/list``, for whoever offers the tools to
the model (the provider executor, at start-up).

tools.yaml may leave an MCP tool's ``description`` and ``parameters`` out; they are then what
its server lists. A server that cannot be asked yet (it starts after us) is asked again until
``wait_s`` has passed; then start-up fails with the reason, rather than offering the model a
tool without its schema.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runcoord.errors import ConfigError, RuncoordError
from runcoord.registry import Registry
from runcoord.tools.gateway import GatewayError
from runcoord.tools.mcp_gateway import McpTool, McpToolGateway

log = logging.getLogger(__name__)


async def with_listing(registry: Registry, wait_s: float = 60.0) -> Registry:
    """``registry`` with its unlisted MCP tools' schemas filled from their servers."""
    servers = sorted(
        {t.server for t in registry.tools.values() if t.server and t.parameters is None}
    )
    if not servers:
        return registry
    listing = {}
    async with McpToolGateway({s: registry.mcp_servers[s] for s in servers}) as gateway:
        for server in servers:
            tools = await _listed(gateway, server, time.monotonic() + wait_s)
            listing[server] = {
                name: {"description": t.description, "inputSchema": t.input_schema}
                for name, t in tools.items()
            }
    missing = [
        name
        for name, t in registry.tools.items()
        if t.server and t.parameters is None and t.endpoint not in listing[t.server]
    ]
    if missing:
        raise ConfigError(f"MCP tools their servers do not list: {missing}")
    return registry.with_listing(listing)


async def _listed(gateway: McpToolGateway, server: str, deadline: float) -> dict[str, McpTool]:
    pause = 0.2
    while True:
        try:
            return await gateway.tools(server)
        except GatewayError as exc:
            raise ConfigError(f"MCP server {server}: {exc}") from exc
        except RuncoordError as exc:  # not reachable yet
            if time.monotonic() + pause > deadline:
                raise ConfigError(f"MCP server {server} could not be listed: {exc}") from exc
            log.info("MCP server %s not listed yet (%s); asking again", server, exc)
            await asyncio.sleep(pause)
            pause = min(2.0, pause * 2)
