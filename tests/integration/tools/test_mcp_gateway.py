"""The tool gateway contract against McpToolGateway and the real sandbox gateway's MCP server
(`runcoord sim tools`, ``/mcp``): the same process, database, audit and fault knobs as
tests/integration/tools/test_http_gateway.py, reached over MCP through the TCP proxy the tests
can cut. The contract hands its specs as over HTTP (tests/tool_gateway_contract.py SPECS); each
goes to the same tool on the sandbox's MCP server, as ``--tools-via mcp`` moves them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runcoord.registry import McpServerSpec, ToolSpec
from runcoord.tools.gateway import GatewayAnswer, LookupAnswer, ToolGateway
from runcoord.tools.mcp_gateway import McpToolGateway
from tests.integration.tools.sandbox import Sandbox
from tests.integration.tools.test_http_gateway import HttpHarness
from tests.tool_gateway_contract import ToolGatewayContract

pytestmark = pytest.mark.integration

SERVER = "sandbox"


def over_mcp(spec: ToolSpec) -> ToolSpec:
    """The same tool on the sandbox's MCP server: called by its name, looked up by its
    ``<name>_actions`` tool (runcoord/harness/systems/tools_via.py does the same)."""
    lookup = None if spec.lookup is None else f"{spec.name}_actions"
    return spec.model_copy(update={"server": SERVER, "endpoint": spec.name, "lookup": lookup})


class OverMcp:
    """The contract's calls, each with its spec moved onto the sandbox's MCP server."""

    def __init__(self, mcp: McpToolGateway) -> None:
        self.mcp = mcp

    async def call(self, spec: ToolSpec, arguments: Any, **kwargs: Any) -> GatewayAnswer:
        return await self.mcp.call(over_mcp(spec), arguments, **kwargs)

    async def lookup(self, spec: ToolSpec, **kwargs: Any) -> LookupAnswer:
        return await self.mcp.lookup(over_mcp(spec), **kwargs)


class McpHarness(HttpHarness):
    """HttpHarness (the audit from PostgreSQL, the sandbox's fault knobs, the proxy's cut),
    with the MCP gateway in place of the HTTP one."""

    def __init__(self, sandbox: Sandbox, gateway: ToolGateway) -> None:
        self.sandbox = sandbox
        self.gateway = gateway
        self._faults: dict[str, dict[str, Any]] = {}
        self._cut = False


class TestMcpToolGateway(ToolGatewayContract):
    @pytest.fixture
    async def harness(self, sandbox: Sandbox) -> AsyncIterator[McpHarness]:
        url = f"http://{sandbox.proxy.url_netloc}/mcp"
        async with McpToolGateway({SERVER: McpServerSpec(url=url)}) as mcp:
            h = McpHarness(sandbox, OverMcp(mcp))
            yield h
            h.heal()
