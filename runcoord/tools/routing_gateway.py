"""One tool gateway for an executor whose tools are on both kinds of gateway: a tool on an MCP
server (``ToolSpec.server`` set) goes to the MCP gateway, every other one over HTTP."""

from __future__ import annotations

from typing import Any

from runcoord.registry import ToolSpec
from runcoord.tools.gateway import GatewayAnswer, GatewayError, LookupAnswer, ToolGateway


class RoutingGateway:
    def __init__(self, http: ToolGateway, mcp: ToolGateway | None) -> None:
        self.http = http
        self.mcp = mcp

    def _for(self, spec: ToolSpec) -> ToolGateway:
        if spec.server is None:
            return self.http
        if self.mcp is None:
            raise GatewayError(
                f"{spec.name} is on MCP server {spec.server!r}, and there is no MCP gateway"
            )
        return self.mcp

    async def call(
        self,
        spec: ToolSpec,
        arguments: Any,
        *,
        effect_key: str,
        fencing_token: int,
        tenant: str,
        run_id: str,
        tool_call_id: str,
        timeout_s: float | None = None,
        deadline_ms: int | None = None,
    ) -> GatewayAnswer:
        return await self._for(spec).call(
            spec,
            arguments,
            effect_key=effect_key,
            fencing_token=fencing_token,
            tenant=tenant,
            run_id=run_id,
            tool_call_id=tool_call_id,
            timeout_s=timeout_s,
            deadline_ms=deadline_ms,
        )

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        return await self._for(spec).lookup(
            spec, effect_key=effect_key, tenant=tenant, timeout_s=timeout_s
        )
