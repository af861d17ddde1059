"""The sandbox's tool-call path, shared by its two transports (app.py's HTTP routes and
mcp.py's MCP server): one store, one fault plan, one arrivals list, so a call meets the same
rules and leaves the same ground truth however it came."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from runcoord import tracing
from runcoord.sim.tools import store
from runcoord.sim.tools.catalog import Tool
from runcoord.sim.tools.connection import DROP
from runcoord.sim.tools.faults import Decision, FaultPlan

# Cuts the caller's connection without an answer (connection.py): drop_after_act.
Drop = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    """What a tool call came to, before a transport shapes it: an HTTP status and its JSON
    body (a refusal's is ``{"error": {...}}``). ``replayed``: a key-honouring tool answered a
    repeat from its records; ``dropped``: the connection was cut instead, nothing to send."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    dropped: bool = False


def refusal(status: int, kind: str, message: str, **extra: Any) -> Answer:
    return Answer(status, {"error": {"type": kind, "message": message, **extra}})


def invalid_arguments(exc: ValidationError) -> Answer:
    details = to_jsonable_python(exc.errors(), fallback=str)
    return refusal(422, "invalid_arguments", "bad tool arguments", details=details)


@dataclass(frozen=True)
class CallMeta:
    """What a call carries besides its arguments: HTTP headers here, MCP `_meta` in mcp.py."""

    tenant: str | None = None
    run_id: str | None = None
    tool_call_id: str | None = None
    idempotency_key: str | None = None
    fencing_token: int | None = None
    deadline_ms: int | None = None


@dataclass(frozen=True)
class Names:
    """How a transport spells those fields and its errors about them, so that a refusal names
    what the caller actually sent."""

    tenant: str
    key: str
    token: str
    deadline: str
    missing: str  # the error type of a field that is missing
    invalid: str  # the error type of a field that is malformed


def dropper(scope: Mapping[str, Any]) -> Drop:
    """The request's way to drop its connection (DroppableConnections puts it in the scope)."""

    async def cannot() -> None:
        raise RuntimeError("not served through DroppableConnections: cannot drop")

    drop: Drop = scope.get(DROP, cannot)
    return drop


class Gateway:
    """The tool-call path both transports share (the HTTP routes below, MCP in mcp.py): one
    store, one fault plan, one arrivals list, so a call meets the same rules and leaves the
    same ground truth however it came."""

    def __init__(self, pool: store.AsyncPool, plan: FaultPlan) -> None:
        self.pool = pool
        self.plan = plan
        # When each tool request arrived, before anything else happens to it: when a tool call
        # reached the gateway, for reads too (the audit log holds writes only). In memory: a
        # restart forgets them.
        self.arrivals: list[dict[str, Any]] = []

    def arrived(
        self, tool: str, run_id: str | None, tool_call_id: str | None, via: str = "http"
    ) -> None:
        self.arrivals.append(
            {
                "tool": tool,
                "run_id": run_id,
                "tool_call_id": tool_call_id,
                "at": time.time(),
                "via": via,  # the transport: http | mcp
            }
        )

    async def call(
        self, tool: Tool, body: dict[str, Any], meta: CallMeta | Answer, names: Names, drop: Drop
    ) -> Answer:
        """Validate, draw the faults, act (a write) and answer. ``meta`` may be the refusal of
        a malformed one: it is given after the arguments' own, as it always was over HTTP."""
        try:
            args = tool.args.model_validate(body)
        except ValidationError as exc:
            return invalid_arguments(exc)
        if isinstance(meta, Answer):
            return meta
        tracing.annotate(
            tool=tool.name,
            run_id=meta.run_id,
            tool_call_id=meta.tool_call_id,
            effect_key=meta.idempotency_key,
        )
        phash = store.payload_hash(body)
        identity = meta.idempotency_key or meta.tool_call_id or phash
        decision = self.plan.decide(tool.name, identity)
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.error_status is not None:
            return refusal(decision.error_status, "injected_fault", "try again; nothing was done")
        if tool.kind == "read":
            return Answer(200, tool.respond(args, None))
        if not meta.tenant:
            return refusal(400, names.missing, f"{names.tenant} is required for write tools")
        call = store.Call(
            tool=tool.name,
            tenant=meta.tenant,
            run_id=meta.run_id,
            tool_call_id=meta.tool_call_id,
            idempotency_key=meta.idempotency_key,
            fencing_token=meta.fencing_token,
            payload_hash=phash,
            dedupe=tool.idempotency == "key",
            record_ref=tool.lookup,
            deadline_ms=meta.deadline_ms,
        )
        return await self._write(tool, args, call, decision, names, drop)

    async def _write(
        self, tool: Tool, args: Any, call: store.Call, decision: Decision, names: Names, drop: Drop
    ) -> Answer:
        try:
            outcome = await store.act(
                self.pool, call, lambda audit_id: tool.respond(args, audit_id)
            )
        except psycopg.OperationalError as exc:
            # Commit may or may not have happened: like a real tool, we cannot say.
            return refusal(503, "storage_unavailable", str(exc))
        if isinstance(outcome, store.Refused):
            return _refused(outcome, call, names)
        if outcome.conflict:
            return refusal(
                422,
                "idempotency_key_reused",
                f"this {names.key} was used with another request body",
            )
        if outcome.replayed:
            return Answer(200, outcome.response, replayed=True)
        if decision.drop:
            await drop()
            return Answer(200, outcome.response, dropped=True)
        if decision.slow_s:
            await asyncio.sleep(decision.slow_s)
        return Answer(200, outcome.response)

    async def actions(self, ref: str, tenant: str | None) -> Answer:
        """update_crm's reconcile lookup: its actions whose key was ``ref``."""
        try:
            rows = await store.actions_by_ref(self.pool, "update_crm", ref, tenant)
        except psycopg.OperationalError as exc:
            return refusal(503, "storage_unavailable", str(exc))
        return Answer(200, {"ref": ref, "actions": rows})


def _refused(outcome: store.Refused, call: store.Call, names: Names) -> Answer:
    if outcome.reason == "fenced":
        return refusal(
            409,
            "fenced",
            f"{names.token} {call.fencing_token} is older than {outcome.seen}, already seen "
            f"for this {names.key}: not acted on",
            seen=outcome.seen,
        )
    return refusal(
        408,
        "deadline_exceeded",
        f"{names.deadline} {call.deadline_ms} had passed ({outcome.now_ms}) when the request "
        "came to act: not acted on",
    )
