"""The tool registry (tools.yaml): what each tool is, how it may be retried, who may use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runcoord.domain import Policy, ToolRule
from runcoord.domain.policy import (
    MAX_OUTPUT_BYTES as MAX_OUTPUT_BYTES,
)  # the ceiling of a tool's max_output_bytes
from runcoord.errors import ConfigError


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    endpoint: str
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

    @property
    def write(self) -> bool:
        return self.kind == "write"


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: dict[str, ToolSpec]

    def rules(self) -> dict[str, ToolRule]:
        return {n: ToolRule(n, t.write, frozenset(t.tenants)) for n, t in self.tools.items()}

    def policy(self, **overrides: Any) -> Policy:
        return Policy(tools=self.rules(), **overrides)

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
    named = {n: t.model_copy(update={"name": n}) for n, t in registry.tools.items()}
    for name, tool in named.items():
        if tool.kind == "read" and tool.idempotency == "none" and tool.lookup:
            raise ConfigError(f"tool registry {path}: {name}: a read tool needs no lookup")
    return Registry(tools=named)
