"""The tool gateway contract against McpToolGateway and the real sandbox gateway's MCP server
(`runcoord sim tools`, ``/mcp``): the same process, database, audit and fault knobs as
tests/integration/tools/test_http_gateway.py, reached over MCP through the TCP proxy the tests
can cut. The contract hands its specs as over HTTP (tests/tool_gateway_contract.py SPECS); each
goes to the same tool on the sandbox's MCP server, as ``--tools-via mcp`` moves them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runcoord.config import REPO_ROOT
from runcoord.errors import ConfigError
from runcoord.harness.systems.tools_via import registry_file
from runcoord.registry import McpServerSpec, ToolSpec, load_registry
from runcoord.sim.tools.catalog import TOOLS
from runcoord.tools.gateway import GatewayAnswer, LookupAnswer, ToolGateway
from runcoord.tools.listing import with_listing
from runcoord.tools.mcp_gateway import McpToolGateway
from tests.integration.processes import free_port
from tests.integration.tools.sandbox import Sandbox
from tests.integration.tools.test_http_gateway import HttpHarness
from tests.tool_gateway_contract import ToolGatewayContract

pytestmark = pytest.mark.integration

SERVER = "sandbox"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.mark.anyio
async def test_the_provider_offers_mcp_tools_as_their_server_lists_them(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The registry's MCP twin leaves every schema to the server: the tools offered to the
    model are the sandbox's own (its catalog's arguments), and the lookup tool is not offered."""
    path = registry_file(
        REPO_ROOT / "tools.yaml", "mcp", f"http://{sandbox.proxy.url_netloc}", tmp_path
    )
    twin = load_registry(path)
    assert all(t.parameters is None for t in twin.tools.values())
    offered = {f["name"]: f for f in (await with_listing(twin)).function_tools()}
    assert set(offered) == set(TOOLS)
    for name, tool in TOOLS.items():
        assert offered[name]["parameters"] == tool.args.model_json_schema()
        assert offered[name]["description"]


@pytest.mark.anyio
async def test_a_server_that_never_answers_fails_the_listing_with_the_reason(
    tmp_path: Path,
) -> None:
    path = registry_file(
        REPO_ROOT / "tools.yaml", "mcp", f"http://127.0.0.1:{free_port()}", tmp_path
    )
    with pytest.raises(ConfigError, match="could not be listed"):
        await with_listing(load_registry(path), wait_s=1.0)
