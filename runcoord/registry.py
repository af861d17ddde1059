"""The tool registry (tools.yaml): what each tool is, how it may be retried, who may use it.

A tool is reached over HTTP (``endpoint`` is a path under the tool gateway's URL) or on an MCP
server declared under ``mcp_servers`` (``server`` names it; ``endpoint`` is the tool's name
there, by default the entry's own). An MCP tool's ``description`` and ``parameters`` may be
left out: they come from the server's ``tools/list`` (:meth:`Registry.with_listing`). What a
tool may do after an unknown outcome (``kind``, ``idempotency``, ``lookup``) is always ours to
declare: a server's own hints (``idempotentHint``) are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runcoord.domain import Policy, ToolRule
from runcoord.domain.policy import (
    MAX_OUTPUT_BYTES as MAX_OUTPUT_BYTES,
)  # the ceiling of a tool's max_output_bytes
from runcoord.domain.policy import ApprovalRule, ArgumentCondition
from runcoord.errors import ConfigError


class McpServerSpec(BaseModel):
    """An MCP server (Streamable HTTP) whose tools runcoord calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    # HTTP header -> the NAME of the environment variable that holds its value (a token is
    # never written in tools.yaml).
    headers: dict[str, str] = Field(default_factory=dict)

    def resolved_headers(self) -> dict[str, str]:
        missing = [env for env in self.headers.values() if env not in os.environ]
        if missing:
            raise ConfigError(f"MCP server {self.url}: environment variables not set: {missing}")
        return {header: os.environ[env] for header, env in self.headers.items()}


class ConditionSpec(BaseModel):
    """A condition on one top-level argument: ``above`` a number, or ``equals`` a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    argument: str
    above: float | None = None
    equals: Any = None

    def rule(self) -> ArgumentCondition:
        return ArgumentCondition(self.argument, self.above, self.equals)


class ApprovalSpec(BaseModel):
    """Which calls of a tool wait for a person's approval (DESIGN.md, "Approvals")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = True  # for every tenant not named in `tenants`
    tenants: dict[str, bool] = Field(default_factory=dict)  # per-tenant override
    when: list[ConditionSpec] = Field(default_factory=list)  # only when one holds (if given)

    def rule(self) -> ApprovalRule:
        return ApprovalRule(self.required, dict(self.tenants), tuple(c.rule() for c in self.when))


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    # HTTP: the path under the gateway's URL. MCP: the tool's name on its server.
    endpoint: str = ""
    # The key of the MCP server (Registry.mcp_servers) the tool is on; None: over HTTP.
    server: str | None = None
    kind: Literal["read", "write"]
    # key: the gateway honours Idempotency-Key, so a retry with the same key is safe.
    # none: it does not; an unknown outcome is reconciled by `lookup` or reported, never retried.
    idempotency: Literal["key", "none"]
    lookup: str | None = None
    timeout_ms: int = Field(default=5_000, gt=0)
    max_output_bytes: int = Field(default=MAX_OUTPUT_BYTES, gt=0, le=MAX_OUTPUT_BYTES)
    output_schema: dict[str, Any] | None = None
    tenants: list[str] = Field(default_factory=list)
    description: str = ""
    parameters: dict[str, Any] | None = None
    approval: ApprovalSpec | None = None

    @property
    def write(self) -> bool:
        return self.kind == "write"

    @property
    def transport(self) -> Literal["http", "mcp"]:
        return "http" if self.server is None else "mcp"


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mcp_servers: dict[str, McpServerSpec] = Field(default_factory=dict)
    tools: dict[str, ToolSpec]

    def with_listing(self, listing: Mapping[str, Mapping[str, Any]]) -> Registry:
        """The registry with its MCP tools' ``description`` and ``parameters`` taken from their
        servers' ``tools/list`` where tools.yaml leaves them out. ``listing``: server -> tool
        name -> an object with ``description`` and ``inputSchema``."""
        tools = {}
        for name, tool in self.tools.items():
            listed = listing.get(tool.server or "", {}).get(tool.endpoint)
            if tool.server is not None and listed is not None:
                tool = tool.model_copy(
                    update={
                        "description": tool.description or listed.get("description") or "",
                        "parameters": tool.parameters or listed.get("inputSchema"),
                    }
                )
            tools[name] = tool
        return self.model_copy(update={"tools": tools})

    def rules(self) -> dict[str, ToolRule]:
        return {
            n: ToolRule(n, t.write, frozenset(t.tenants), t.approval.rule() if t.approval else None)
            for n, t in self.tools.items()
        }

    def approval_version(self) -> str:
        """The version of the approval rules: a hash of every tool's, so a change to any of
        them refuses the decisions made under the old ones."""
        rules = {n: t.approval.model_dump(mode="json") for n, t in self.tools.items() if t.approval}
        text = json.dumps(rules, sort_keys=True, separators=(",", ":"))
        return "ap1_" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def policy(self, **overrides: Any) -> Policy:
        return Policy(
            tools=self.rules(), **{"approval_version": self.approval_version(), **overrides}
        )

    def function_tools(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function definitions (what a Responses turn offers the model)."""
        return [
            {
                "type": "function",
                "name": name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
                "strict": False,
            }
            for name, tool in self.tools.items()
        ]


def load_registry(path: Path) -> Registry:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"tool registry {path}: {exc}") from exc
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"tool registry {path}: {exc}") from exc
    named = {n: _named(n, t) for n, t in registry.tools.items()}
    for name, tool in named.items():
        problem = _problem(tool, registry.mcp_servers)
        if problem:
            raise ConfigError(f"tool registry {path}: {name}: {problem}")
    return Registry(mcp_servers=registry.mcp_servers, tools=named)


def _named(name: str, tool: ToolSpec) -> ToolSpec:
    update: dict[str, Any] = {"name": name}
    if tool.server is not None and not tool.endpoint:
        update["endpoint"] = name  # an MCP tool is called by its entry's name by default
    return tool.model_copy(update=update)


def _problem(tool: ToolSpec, servers: Mapping[str, McpServerSpec]) -> str | None:
    if tool.kind == "read" and tool.idempotency == "none" and tool.lookup:
        return "a read tool needs no lookup"
    if tool.server is None:
        if not tool.endpoint.startswith("/"):
            return f"endpoint must be a path under the gateway's URL, got {tool.endpoint!r}"
        return None
    if tool.server not in servers:
        return f"server {tool.server!r} is not declared under mcp_servers ({sorted(servers)})"
    if tool.lookup is not None and "/" in tool.lookup:
        return "an MCP tool's lookup is the name of a tool on the same server, not a path"
    return None
