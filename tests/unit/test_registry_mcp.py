"""tools.yaml's MCP servers: what the loader accepts, what it refuses with the reason, and the
replay's MCP twin of the product registry (--tools-via mcp)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runcoord.errors import ConfigError
from runcoord.harness.systems.tools_via import registry_file
from runcoord.registry import McpServerSpec, load_registry

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def mcp_tool(**extra: object) -> dict:
    return {"server": "crm", "kind": "write", "idempotency": "key", "tenants": ["t1"], **extra}


def test_mcp_tools_load_with_their_server(tmp_path: Path) -> None:
    body = {
        "mcp_servers": {"crm": {"url": "http://crm.test/mcp"}},
        "tools": {"open_case": mcp_tool(), "close_case": mcp_tool(endpoint="case.close")},
    }
    registry = load_registry(write(tmp_path, body))
    assert registry.tools["open_case"].endpoint == "open_case"
    assert registry.tools["close_case"].endpoint == "case.close"
    assert registry.tools["open_case"].transport == "mcp"
    assert registry.mcp_servers["crm"].url == "http://crm.test/mcp"


@pytest.mark.parametrize(
    ("tool", "servers", "says"),
    [
        (mcp_tool(), {}, "not declared under mcp_servers"),
        (mcp_tool(idempotency="none", lookup="/cases?ref={idempotency_key}"), None, "lookup"),
        ({"endpoint": "tools/x", "kind": "read", "idempotency": "key"}, None, "must be a path"),
    ],
)
def test_a_bad_entry_is_refused_with_the_reason(
    tmp_path: Path, tool: dict, servers: dict | None, says: str
) -> None:
    body = {"mcp_servers": {"crm": {"url": "http://crm.test/mcp"}} if servers is None else servers}
    with pytest.raises(ConfigError, match=says):
        load_registry(write(tmp_path, {**body, "tools": {"x": tool}}))


def test_auth_headers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    server = McpServerSpec(url="http://crm.test/mcp", headers={"Authorization": "CRM_MCP_AUTH"})
    monkeypatch.delenv("CRM_MCP_AUTH", raising=False)
    with pytest.raises(ConfigError, match="CRM_MCP_AUTH"):
        server.resolved_headers()
    monkeypatch.setenv("CRM_MCP_AUTH", "Bearer s3cret")
    assert server.resolved_headers() == {"Authorization": "Bearer s3cret"}


def test_listed_schemas_fill_what_the_registry_leaves_out(tmp_path: Path) -> None:
    own = {"type": "object", "properties": {"case": {"type": "string"}}}
    body = {
        "mcp_servers": {"crm": {"url": "http://crm.test/mcp"}},
        "tools": {"open_case": mcp_tool(), "pinned": mcp_tool(parameters=own)},
    }
    listed = {"type": "object", "properties": {"subject": {"type": "string"}}}
    listing = {
        "crm": {
            "open_case": {"description": "Open a case.", "inputSchema": listed},
            "pinned": {"description": "x", "inputSchema": listed},
        }
    }
    registry = load_registry(write(tmp_path, body)).with_listing(listing)
    assert registry.tools["open_case"].parameters == listed
    assert registry.tools["open_case"].description == "Open a case."
    assert registry.tools["pinned"].parameters == own  # tools.yaml's own word wins


def test_the_replay_twin_moves_every_tool_onto_the_sandbox_server(tmp_path: Path) -> None:
    http = load_registry(ROOT / "tools.yaml")
    path = registry_file(ROOT / "tools.yaml", "mcp", "http://127.0.0.1:8391/", tmp_path)
    twin = load_registry(path)
    assert twin.mcp_servers["sandbox"].url == "http://127.0.0.1:8391/mcp"
    assert set(twin.tools) == set(http.tools)
    for name, tool in twin.tools.items():
        before = http.tools[name]
        assert (tool.server, tool.endpoint, tool.parameters) == ("sandbox", name, None)
        assert (tool.kind, tool.idempotency, tool.tenants, tool.timeout_ms) == (
            before.kind,
            before.idempotency,
            before.tenants,
            before.timeout_ms,
        )
        assert (tool.lookup is None) == (before.lookup is None)
    assert twin.tools["update_crm"].lookup == "update_crm_actions"
    assert registry_file(ROOT / "tools.yaml", "http", "http://x", tmp_path) == ROOT / "tools.yaml"
