"""What a simulated turn does: its tool-call steps, their latencies, and how it ends.

A script is plain JSON (format in README.md). It comes, first match wins, from the run's or
response's metadata key ``sim_script``, a user message's metadata, the assistant's metadata,
the config file (by assistant id or name, or by model), and otherwise the default below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import jsonschema

from runcoord.sim.provider.errors import bad_request
from runcoord.sim.provider.params import SIM_SCRIPT_KEY

FinalStatus = Literal["completed", "failed", "incomplete"]
DEFAULT_MESSAGE = "This is a simulated reply."

_LATENCY = {"type": "number", "minimum": 0}
SCRIPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["tool_calls"],
                "properties": {
                    "tool_calls": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                                "arguments": {"type": ["object", "string"]},
                            },
                        },
                    },
                    "latency_ms": _LATENCY,
                },
            },
        },
        "final": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string"},
                "status": {"enum": ["completed", "failed", "incomplete"]},
                "error": {"type": "string"},
                "latency_ms": _LATENCY,
            },
        },
        "latency_ms": _LATENCY,
        "queue_ms": _LATENCY,
        "expires_after_s": {"type": "number", "exclusiveMinimum": 0},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCRIPT_SCHEMA)


class ScriptError(ValueError):
    """A script that does not follow the format; the message says where."""


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    arguments: str  # sent verbatim as function.arguments, so a script can send bad JSON


@dataclass(frozen=True)
class Step:
    tool_calls: tuple[ToolCallSpec, ...]
    latency_ms: float | None = None


@dataclass(frozen=True)
class Final:
    message: str = DEFAULT_MESSAGE
    status: FinalStatus = "completed"
    error: str = "Simulated model failure."
    latency_ms: float | None = None


@dataclass(frozen=True)
class Script:
    steps: tuple[Step, ...] = ()
    final: Final = Final()
    latency_ms: float | None = None  # default for steps that name none
    queue_ms: float | None = None
    expires_after_s: float | None = None  # this run's expires_at, instead of the config's

    def step_latency_ms(self, index: int, default_ms: float) -> float:
        """Model latency before step ``index``; ``len(steps)`` is the final message."""
        own = self.steps[index].latency_ms if index < len(self.steps) else self.final.latency_ms
        if own is not None:
            return own
        return self.latency_ms if self.latency_ms is not None else default_ms

    def sequential(self) -> Script:
        """One call per step, for ``parallel_tool_calls: false``."""
        if all(len(step.tool_calls) == 1 for step in self.steps):
            return self
        steps = tuple(
            Step((call,), step.latency_ms if i == 0 else 0.0)
            for step in self.steps
            for i, call in enumerate(step.tool_calls)
        )
        return replace(self, steps=steps)


def parse_script(data: object) -> Script:
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
        raise ScriptError(f"script{where}: {first.message}")
    assert isinstance(data, dict)
    steps = tuple(
        Step(
            tuple(
                ToolCallSpec(call["name"], _arguments(call.get("arguments", {})))
                for call in step["tool_calls"]
            ),
            step.get("latency_ms"),
        )
        for step in data.get("steps", [])
    )
    final_data = data.get("final", {})
    final = Final(
        message=final_data.get("message", DEFAULT_MESSAGE),
        status=final_data.get("status", "completed"),
        error=final_data.get("error", Final.error),
        latency_ms=final_data.get("latency_ms"),
    )
    return Script(
        steps, final, data.get("latency_ms"), data.get("queue_ms"), data.get("expires_after_s")
    )


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def default_script(function_tools: Sequence[Mapping[str, Any]]) -> Script:
    """With function tools: one call of the first, then a message. Without: a message."""
    if not function_tools:
        return Script()
    first = function_tools[0]
    arguments = _sample(first.get("parameters") or {"type": "object"})
    if not isinstance(arguments, dict):
        arguments = {}  # function arguments are always a JSON object
    encoded = json.dumps(arguments, separators=(",", ":"))
    return Script(steps=(Step((ToolCallSpec(str(first["name"]), encoded),)),))


def _sample(schema: Mapping[str, Any]) -> object:
    """A small value that fits a JSON schema: required properties only, first enum value."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: _sample(properties.get(name) or {}) for name in schema.get("required") or []}
    return {
        "string": "sample",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "null": None,
    }.get(str(kind), "sample")


@dataclass(frozen=True)
class ScriptBook:
    """Scripts from the config file: named ones, and which assistant or model uses which."""

    named: Mapping[str, Script]
    by_assistant: Mapping[str, str]
    by_model: Mapping[str, str]

    def from_text(self, text: str) -> Script:
        """A ``sim_script`` value: inline JSON, or the name of a script in the config."""
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
            except ValueError as exc:
                raise ScriptError(f"script is not valid JSON: {exc}") from None
            return parse_script(data)
        if stripped in self.named:
            return self.named[stripped]
        raise ScriptError(f"no script named '{stripped}' in the simulator's config")

    def from_metadata(self, metadata: Mapping[str, str], param: str) -> Script | None:
        """The script a metadata object carries; a bad one is the client's 400."""
        text = metadata.get(SIM_SCRIPT_KEY)
        if text is None:
            return None
        try:
            return self.from_text(text)
        except ScriptError as exc:
            raise bad_request(f"Invalid '{param}.{SIM_SCRIPT_KEY}': {exc}", param=param) from None

    def for_assistant(self, assistant_id: str, name: str | None) -> Script | None:
        for key in (assistant_id, name):
            if key is not None and key in self.by_assistant:
                return self.named[self.by_assistant[key]]
        return None

    def for_model(self, model: str) -> Script | None:
        return self.named[self.by_model[model]] if model in self.by_model else None


EMPTY_BOOK = ScriptBook({}, {}, {})
