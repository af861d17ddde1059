"""An in-memory tool gateway for tests: the sandbox gateway's behaviour, without HTTP.

Like `runcoord sim tools` (runcoord/sim/tools/), it knows a catalog of tools (the registry's
specs, by endpoint), keeps an audit row per action (write tools only: reads never act),
honours the idempotency key of ``idempotency: key`` tools (a repeat answers the first result
without acting; the same key with another body is refused), answers the lookups of tools
that declare one, and refuses bad requests before acting. Like the sandbox, a write is refused
without acting when its fencing token is lower than one already seen for its (tenant, key)
(ToolFenced), or when it comes to act past its request deadline by ``clock`` (NotSent); see
tools.yaml, "Request deadlines and fencing". Its faults are flags, armed with
:meth:`MemoryToolGateway.arm`, and nothing ever sleeps:

- ``unreachable``: nothing reaches the tool: NotSent (a lookup: LookupUnavailable);
- ``throttle``: refused before acting (HTTP's 429): NotSent;
- ``error_before_act``: a server error before acting (HTTP's 5xx): OutcomeUnknown for a
  write tool (a 5xx does not say whether it acted), NotSent for a read tool;
- ``drop_after_act``: the tool acts, then the answer is lost: OutcomeUnknown. Like the
  sandbox's, it fires only when the tool acts (not on a replay or a refusal);
- ``slow`` (with ``delay_s``): the gateway is slow, not dead. The caller's attempt times out
  at once (OutcomeUnknown) while the request goes on: it is handled ``delay_s`` later by the
  gateway's clock (``clock``, a fake one in tests), when anything next looks at the gateway
  (a call, a lookup, :meth:`MemoryToolGateway.actions`, :meth:`MemoryToolGateway.settle`).
  :meth:`MemoryToolGateway.flush` handles every such request as if its time had come;
- ``hold``: the request waits at the gateway, and its caller with it, until
  :meth:`MemoryToolGateway.release` (an in-flight request, for interleavings);
- ``slow_answer``: a slow success. The tool acts at once, and its answer waits, its caller
  with it, until :meth:`MemoryToolGateway.release`.

Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import time
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
    ToolFenced,
    deadline_of,
    needs_lookup,
)

Fault = Literal[
    "unreachable", "throttle", "error_before_act", "drop_after_act", "slow", "hold", "slow_answer"
]
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
    deadline_ms: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A write the gateway refused without acting, and why: ``fenced`` (its token was lower
    than one already seen for its key) or ``deadline_exceeded`` (it came to act too late)."""

    tool: str
    effect_key: str
    fencing_token: int
    reason: Literal["fenced", "deadline_exceeded"]
    at: float  # the gateway's clock when it refused


@dataclass(slots=True)
class _Armed:
    fault: Fault
    tool: str | None  # None: every tool
    times: int | None  # None: until disarmed
    delay_s: float = 0.0


@dataclass(slots=True)
class _Pending:
    """A slow request still on its way to the tool."""

    at: float  # when it is handled, by the gateway's clock
    handle: Callable[[float], GatewayAnswer]


@dataclass(slots=True)
class MemoryToolGateway:
    tools: dict[str, ToolSpec]  # by endpoint
    respond: Responder = echo
    # The gateway's wall clock, in seconds (time.time's): request deadlines are read on it.
    clock: Callable[[], float] = time.time
    audit: list[AuditRow] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    _armed: list[_Armed] = field(default_factory=list)
    _by_key: dict[tuple[str, str, str], AuditRow] = field(default_factory=dict)
    # The highest fencing token seen per (tenant, effect key), writes only.
    _fences: dict[tuple[str, str], int] = field(default_factory=dict)
    _pending: list[_Pending] = field(default_factory=list)
    _held: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(
        cls,
        tools: Iterable[ToolSpec],
        respond: Responder = echo,
        clock: Callable[[], float] = time.time,
    ) -> MemoryToolGateway:
        """A gateway serving these tools (e.g. ``registry.tools.values()``)."""
        return cls({spec.endpoint: spec for spec in tools}, respond, clock)

    # ---- faults ----------------------------------------------------------------------------

    def arm(
        self,
        fault: Fault,
        tool: str | None = None,
        times: int | None = None,
        *,
        delay_s: float = 0.0,
    ) -> None:
        """Make ``fault`` happen to ``tool``'s calls (every tool's if None), ``times`` times
        (until :meth:`disarm` if None). ``delay_s``: how late a ``slow`` request is handled."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        self._armed.append(_Armed(fault, tool, times, delay_s))

    def disarm(self) -> None:
        """Every fault off (slow requests already on their way still arrive; held ones are
        released)."""
        self._armed.clear()
        self.release()

    def release(self) -> None:
        """Let every held request go on (and the ones held later wait again)."""
        self._release.set()
        self._release = asyncio.Event()

    @property
    def holding(self) -> int:
        """How many requests are held right now."""
        return self._held

    def settle(self) -> None:
        """Handle the slow requests whose time has come by the gateway's clock."""
        now = self.clock()
        while due := [p for p in self._pending if p.at <= now]:
            first = min(due, key=lambda p: p.at)
            self._pending.remove(first)
            self._late(first)

    def flush(self) -> None:
        """Handle every slow request still on its way, each at its own time."""
        while self._pending:
            first = min(self._pending, key=lambda p: p.at)
            self._pending.remove(first)
            self._late(first)

    @staticmethod
    def _late(pending: _Pending) -> None:
        # Nobody is listening any more: its refusal or lost answer goes nowhere.
        with contextlib.suppress(NotSent, OutcomeUnknown, ToolFenced):
            pending.handle(pending.at)

    def _fires(self, fault: Fault, tool: str) -> _Armed | None:
        for armed in self._armed:
            if armed.fault == fault and armed.tool in (None, tool):
                if armed.times is not None:
                    armed.times -= 1
                    if armed.times == 0:
                        self._armed.remove(armed)
                return armed
        return None

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
        deadline_ms: int | None = None,
    ) -> GatewayAnswer:
        self.settle()
        tool = self.tools.get(spec.endpoint)
        name = tool.name if tool is not None else spec.endpoint.rsplit("/", 1)[-1]
        if self._fires("unreachable", name):
            raise NotSent("unreachable: the call did not reach the gateway")
        deadline = deadline_of(spec, timeout_s, deadline_ms, self.clock())
        self.arrivals.append(
            Arrival(name, effect_key, fencing_token, tenant, run_id, tool_call_id, deadline)
        )
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
        arguments = copy.deepcopy(arguments)

        def handle(now: float) -> GatewayAnswer:
            return self._handle(
                tool,
                arguments,
                effect_key,
                fencing_token,
                tenant,
                run_id,
                tool_call_id,
                deadline,
                now,
            )

        if (slow := self._fires("slow", name)) is not None:
            self._pending.append(_Pending(self.clock() + slow.delay_s, handle))
            raise OutcomeUnknown("read timeout: the gateway is slow (the request goes on)")
        if self._fires("hold", name):
            await self._hold()
            self.settle()
        if self._fires("slow_answer", name):
            # A slow success: the tool acts now, and its answer is held until released.
            answer = handle(self.clock())
            await self._hold()
            return answer
        return handle(self.clock())

    async def _hold(self) -> None:
        self._held += 1
        try:
            await self._release.wait()
        finally:
            self._held -= 1

    def _handle(
        self,
        tool: ToolSpec,
        arguments: dict[str, Any],
        effect_key: str,
        fencing_token: int,
        tenant: str,
        run_id: str,
        tool_call_id: str,
        deadline_ms: int,
        now: float,
    ) -> GatewayAnswer:
        """The request reaches the tool at ``now`` (the gateway's clock)."""
        if not tool.write:
            return _answer(self.respond(tool, copy.deepcopy(arguments), None))
        if not tenant:
            return _refusal(400, "missing_header", "a tenant is required for write tools")
        if effect_key:
            fence = (tenant, effect_key)
            seen = self._fences[fence] = max(self._fences.get(fence, fencing_token), fencing_token)
            if seen > fencing_token:
                self.refused.append(Refusal(tool.name, effect_key, fencing_token, "fenced", now))
                raise ToolFenced(
                    f"{tool.name}: fencing token {fencing_token} is older than {seen}", seen=seen
                )
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
        if now * 1000 >= deadline_ms:
            self.refused.append(
                Refusal(tool.name, effect_key, fencing_token, "deadline_exceeded", now)
            )
            raise NotSent(f"408: past its deadline ({deadline_ms}), not acted on")
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
        if self._fires("drop_after_act", tool.name):
            raise OutcomeUnknown("the tool acted; its answer was lost")
        return _answer(response)

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        self.settle()
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
        self.settle()
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
