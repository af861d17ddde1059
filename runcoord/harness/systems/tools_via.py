"""``--tools-via mcp``: the same sandbox tools, reached over MCP instead of HTTP.

The sandbox gateway serves both transports from one process and one audit log (``/tools/*``
and ``/mcp``), so a replay over MCP is judged by the same ground truth as one over HTTP. The
registry runcoord gets is the replay's own tools.yaml with every tool moved onto the sandbox's
MCP server: same ``kind``, ``idempotency``, timeouts and tenants (ours to declare, never the
server's hints), each HTTP lookup replaced by the server's lookup tool (``<tool>_actions``),
and no ``description`` or ``parameters``: those come from the server's ``tools/list``, as they
would for a team's own MCP server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml

from runcoord.harness.workload.trace import APPROVAL_ARGUMENT
from runcoord.registry import ApprovalSpec, ConditionSpec, McpServerSpec, Registry, load_registry

ToolsVia = Literal["http", "mcp"]
SANDBOX_SERVER = "sandbox"


def via_mcp(registry: Registry, url: str) -> Registry:
    """``registry``'s tools, all on the MCP server at ``url`` (the sandbox's ``/mcp``)."""
    tools = {
        name: tool.model_copy(
            update={
                "server": SANDBOX_SERVER,
                "endpoint": name,
                "lookup": None if tool.lookup is None else f"{name}_actions",
                "description": "",
                "parameters": None,
            }
        )
        for name, tool in registry.tools.items()
    }
    return Registry(mcp_servers={SANDBOX_SERVER: McpServerSpec(url=url)}, tools=tools)


def with_approval_rules(registry: Registry) -> Registry:
    """``registry`` with every write tool asking approval for the calls a trace marks
    (``approval_required: true`` in their arguments: runcoord workload generate --approvals)."""
    rule = ApprovalSpec(when=[ConditionSpec(argument=APPROVAL_ARGUMENT, equals=True)])
    tools = {
        name: tool.model_copy(update={"approval": rule}) if tool.write else tool
        for name, tool in registry.tools.items()
    }
    return registry.model_copy(update={"tools": tools})


def registry_file(
    tools_file: Path, via: ToolsVia, gateway_url: str, folder: Path, approvals: bool = False
) -> Path:
    """The tools.yaml runcoord's processes load for this replay: ``tools_file`` itself over
    HTTP without approvals; else its twin (tools over MCP, approval rules for the calls the
    trace marks), written into ``folder`` and kept with the evidence."""
    if via == "http" and not approvals:
        return tools_file
    registry = load_registry(tools_file)
    if via == "mcp":
        registry = via_mcp(registry, f"{gateway_url.rstrip('/')}/mcp")
    if approvals:
        registry = with_approval_rules(registry)
    out = folder / f"tools.{via}{'.approvals' if approvals else ''}.yaml"
    body = registry.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    out.write_text(
        f"# Written by the replay from {tools_file} (--tools-via {via}"
        f"{', approvals' if approvals else ''}).\n" + yaml.safe_dump(body, sort_keys=False)
    )
    load_registry(out)  # what the processes will read must load
    return out
