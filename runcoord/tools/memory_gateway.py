"""An in-memory tool gateway for tests: the sandbox gateway's behaviour, without HTTP.

Like `runcoord sim tools` (runcoord/sim/tools/), it knows a catalog of tools (the registry's
specs, by endpoint), keeps an audit row per action (write tools only: reads never act),
honours the idempotency key of ``idempotency: key`` tools (a repeat answers the first result
without acting; the same key with another body is refused), answers the lookups of tools
that declare one, and refuses bad requests before acting. Its faults are flags, armed with
:meth:`MemoryToolGateway.arm`, and nothing ever sleeps:

- ``unreachable``: nothing reaches the tool: NotSent (a lookup: LookupUnavailable);
- ``throttle``: refused before acting (HTTP's 429): NotSent;
- ``error_before_act``: a server error before acting (HTTP's 5xx): OutcomeUnknown for a
  write tool (a 5xx does not say whether it acted), NotSent for a read tool;
- ``drop_after_act``: the tool acts, then the answer is lost: OutcomeUnknown. Like the
  sandbox's, it fires only when the tool acts (not on a replay or a refusal).

Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from runcoord.registry import ToolSpec
from runcoord.tools.gateway import (
    GatewayAnswer,
    LookupAnswer,
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    needs_lookup,
)

Fault = Literal["unreachable", "throttle", "error_before_act", "drop_after_act"]
# What a tool answers: (its spec, the arguments, the audit id of the action; None for a read).
Responder = Callable[[ToolSpec, dict[str, Any], int | None], Any]


def echo(spec: ToolSpec, arguments: dict[str, Any], audit_id: int | None) -> Any:
    """The default answer: a read echoes its arguments, a write names its action."""
    if audit_id is None:
        return {"tool": spec.name, "arguments": arguments}
    return {"tool": spec.name, "audit_id": audit_id}


def payload_hash(body: Any) -> str:
    """The sandbox's: sha256 of the body's canonical JSON (sorted keys, compact, UTF-8)."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One action a tool took (the sandbox's ``sandbox_audit`` row, with its response)."""

    audit_id: int
    tool: str
    tenant: str
    run_id: str
    tool_call_id: str
    idempotency_key: str
    fencing_token: int
    payload_hash: str
    response: Any


@dataclass(frozen=True, slots=True)
class Arrival:
    """A call that reached the gateway (reads and refused calls too)."""

    tool: str
    effect_key: str
    fencing_token: int
    tenant: str
    run_id: str
    tool_call_id: str


@dataclass(slots=True)
class _Armed:
    fault: Fault
    tool: str | None  # None: every tool
    times: int | None  # None: until disarmed


@dataclass(slots=True)
class MemoryToolGateway:
    tools: dict[str, ToolSpec]  # by endpoint
    respond: Responder = echo
    audit: list[AuditRow] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    _armed: list[_Armed] = field(default_factory=list)
    _by_key: dict[tuple[str, str, str], AuditRow] = field(default_factory=dict)

    @classmethod
    def of(cls, tools: Iterable[ToolSpec], respond: Responder = echo) -> MemoryToolGateway:
        """A gateway serving these tools (e.g. ``registry.tools.values()``)."""
        return cls({spec.endpoint: spec for spec in tools}, respond)

    # ---- faults ----------------------------------------------------------------------------

    def arm(self, fault: Fault, tool: str | None = None, times: int | None = None) -> None:
        """Make ``fault`` happen to ``tool``'s calls (every tool's if None), ``times`` times
        (until :meth:`disarm` if None)."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        self._armed.append(_Armed(fault, tool, times))

    def disarm(self) -> None:
        self._armed.clear()

    def _fires(self, fault: Fault, tool: str) -> bool:
        for armed in self._armed:
            if armed.fault == fault and armed.tool in (None, tool):
                if armed.times is not None:
                    armed.times -= 1
                    if armed.times == 0:
                        self._armed.remove(armed)
                return True
        return False

    # ---- the port --------------------------------------------------------------------------

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
    ) -> GatewayAnswer:
        tool = self.tools.get(spec.endpoint)
        name = tool.name if tool is not None else spec.endpoint.rsplit("/", 1)[-1]
        if self._fires("unreachable", name):
            raise NotSent("unreachable: the call did not reach the gateway")
        self.arrivals.append(Arrival(name, effect_key, fencing_token, tenant, run_id, tool_call_id))
        if tool is None:
            return _refusal(404, "unknown_tool", f"no tool named {name!r} at {spec.endpoint!r}")
        if not isinstance(arguments, dict):
            return _refusal(400, "invalid_json", "the body must be a JSON object")
        problem = _arguments_problem(tool, arguments)
        if problem is not None:
            return _refusal(422, "invalid_arguments", f"bad tool arguments: {problem}")
        if self._fires("throttle", name):
            raise NotSent("429: throttled before acting")
        if self._fires("error_before_act", name):
            # What the HTTP adapter makes of a 5xx: it cannot tell whether a write acted.
            raise (OutcomeUnknown if spec.write else NotSent)("HTTP 503")
        if not tool.write:
            return _answer(self.respond(tool, copy.deepcopy(arguments), None))
        if not tenant:
            return _refusal(400, "missing_header", "a tenant is required for write tools")
        phash = payload_hash(arguments)
        dedupe = (tool.name, tenant, effect_key) if tool.idempotency == "key" else None
        if dedupe is not None and (earlier := self._by_key.get(dedupe)) is not None:
            if earlier.payload_hash != phash:
                return _refusal(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request body",
                )
            return _answer(earlier.response, replayed=True)
        audit_id = len(self.audit) + 1
        response = self.respond(tool, copy.deepcopy(arguments), audit_id)
        row = AuditRow(
            audit_id,
            tool.name,
            tenant,
            run_id,
            tool_call_id,
            effect_key,
            fencing_token,
            phash,
            copy.deepcopy(response),
        )
        self.audit.append(row)
        if dedupe is not None:
            self._by_key[dedupe] = row
        if self._fires("drop_after_act", name):
            raise OutcomeUnknown("the tool acted; its answer was lost")
        return _answer(response)

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        path = needs_lookup(spec)
        tool = next((t for t in self.tools.values() if t.lookup == path), None)
        if tool is None:
            raise LookupUnavailable(f"{spec.name} lookup: no lookup at {path!r}")
        if self._fires("unreachable", tool.name):
            raise LookupUnavailable(f"{spec.name} lookup: unreachable")
        return LookupAnswer(
            tuple(
                {
                    "audit_id": row.audit_id,
                    "response": copy.deepcopy(row.response),
                    "tenant": row.tenant,
                    "run_id": row.run_id,
                    "tool_call_id": row.tool_call_id,
                    "payload_hash": row.payload_hash,
                }
                for row in self.audit
                if row.tool == tool.name
                and row.idempotency_key == effect_key
                and row.tenant == tenant
            )
        )

    # ---- for tests -------------------------------------------------------------------------

    def actions(self, effect_key: str) -> list[AuditRow]:
        """The audit rows of the calls sent with this effect key, oldest first."""
        return [row for row in self.audit if row.idempotency_key == effect_key]


def _arguments_problem(tool: ToolSpec, arguments: dict[str, Any]) -> str | None:
    if tool.parameters is None:
        return None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def _answer(body: Any, *, replayed: bool = False) -> GatewayAnswer:
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return GatewayAnswer(200, encoded, replayed)


def _refusal(status: int, kind: str, message: str) -> GatewayAnswer:
    return GatewayAnswer(status, json.dumps({"error": {"type": kind, "message": message}}).encode())
