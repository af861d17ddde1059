"""The sandbox tool gateway (FastAPI).

POST /tools/{name}                 call a tool; JSON body = its arguments; headers
                                   Idempotency-Key, X-Fencing-Token, X-Tenant, X-Run-Id,
                                   X-Tool-Call-Id, X-Request-Deadline. A write whose token
                                   is lower than one seen for its key: 409 `fenced`; one that
                                   comes to act past its deadline: 408 `deadline_exceeded`
                                   (neither acts; tools.yaml, "Request deadlines and fencing")
GET  /tools/update_crm/actions?ref=<Idempotency-Key>   update_crm's reconcile lookup
GET  /tools                        the catalog
POST /mcp                          the same tools over MCP (Streamable HTTP): mcp.py
GET  /_sim/health                  200 once PostgreSQL and the tables are there
GET  /_sim/faults  POST /_sim/faults   read / replace the fault config (faults.py)
GET  /_sim/audit?run_id=&tool=&tenant=  the audit rows (ground truth)
GET  /_sim/arrivals                when each tool request arrived (reads too; in memory)
POST /_sim/reset                   empty the audit and tool state; faults back to start-up
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from starlette.datastructures import Headers
from starlette.routing import Route

from runcoord import tracing
from runcoord.sim.tools import store
from runcoord.sim.tools.catalog import TOOLS, Tool
from runcoord.sim.tools.connection import DROP, DroppableConnections
from runcoord.sim.tools.faults import Decision, FaultConfig, FaultPlan

log = logging.getLogger(__name__)

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


HEADERS = Names(
    tenant="X-Tenant",
    key="Idempotency-Key",
    token="X-Fencing-Token",
    deadline="X-Request-Deadline",
    missing="missing_header",
    invalid="invalid_header",
)


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


def _integer(raw: str) -> bool:
    return raw.strip().lstrip("-").isdigit()


def _header_meta(h: Headers) -> CallMeta | Answer:
    token_raw = h.get("x-fencing-token")
    if token_raw is not None and not _integer(token_raw):
        return refusal(400, "invalid_header", "X-Fencing-Token must be an integer")
    deadline_raw = h.get("x-request-deadline")
    if deadline_raw is not None and not _integer(deadline_raw):
        return refusal(400, "invalid_header", "X-Request-Deadline must be unix milliseconds")
    return CallMeta(
        tenant=h.get("x-tenant"),
        run_id=h.get("x-run-id"),
        tool_call_id=h.get("x-tool-call-id"),
        idempotency_key=h.get("idempotency-key"),
        fencing_token=None if token_raw is None else int(token_raw),
        deadline_ms=None if deadline_raw is None else int(deadline_raw),
    )


def _http(answer: Answer) -> Response:
    if answer.dropped:
        return Response()  # swallowed: the connection is gone
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


def _error(status: int, kind: str, message: str, **extra: Any) -> Response:
    return _http(refusal(status, kind, message, **extra))


def create_app(
    dsn: str, faults: FaultConfig | None = None, pool_size: int = 10
) -> DroppableConnections:
    # mcp.py builds on this module's Gateway: imported here, not at the top, to avoid a cycle.
    from runcoord.sim.tools.mcp import McpEndpoint

    startup_faults = faults or FaultConfig()
    startup_faults.check_tools(TOOLS)
    plan = FaultPlan(startup_faults)
    pool = store.AsyncPool(dsn, pool_size)
    gateway = Gateway(pool, plan)
    mcp = McpEndpoint(gateway)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mcp.run():
            yield
        await pool.close()

    api = FastAPI(title="runcoord sandbox tool gateway", lifespan=lifespan)
    # A span per tool call, the child of the caller's traceparent (the executor's intent span).
    tracing.instrument(api, exclude=("/_sim/",))
    api.router.routes.append(Route("/mcp", endpoint=mcp))

    @api.get("/tools")
    async def catalog() -> dict[str, Any]:
        return {
            "tools": [
                {"name": t.name, "kind": t.kind, "idempotency": t.idempotency, "lookup": t.lookup}
                for t in TOOLS.values()
            ]
        }

    @api.get("/tools/update_crm/actions")
    async def crm_actions(request: Request, ref: str) -> Response:
        return _http(await gateway.actions(ref, request.headers.get("x-tenant")))

    @api.post("/tools/{name}")
    async def call_tool(name: str, request: Request) -> Response:
        h = request.headers
        gateway.arrived(name, h.get("x-run-id"), h.get("x-tool-call-id"))
        tool = TOOLS.get(name)
        if tool is None:
            return _error(404, "unknown_tool", f"no tool named {name!r}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_json", "the body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "invalid_json", "the body must be a JSON object")
        answer = await gateway.call(tool, body, _header_meta(h), HEADERS, dropper(request.scope))
        return _http(answer)

    @api.get("/_sim/health")
    async def health() -> Response:
        try:
            ready = await store.schema_ready(pool)
        except psycopg.OperationalError as exc:
            return _error(503, "storage_unavailable", str(exc))
        if not ready:
            return _error(503, "schema_missing", "run `runcoord db migrate`")
        return JSONResponse({"ok": True})

    @api.get("/_sim/faults")
    async def get_faults() -> dict[str, Any]:
        return {"faults": plan.config.to_json(), "fired": dict(plan.fired)}

    @api.post("/_sim/faults")
    async def set_faults(request: Request) -> Response:
        try:
            config = FaultConfig.model_validate(await request.json())
            config.check_tools(TOOLS)
        except (ValueError, ValidationError) as exc:
            return _error(422, "invalid_faults", str(exc))
        plan.set(config)
        return JSONResponse({"faults": config.to_json()})

    @api.get("/_sim/audit")
    async def audit(
        run_id: str | None = None, tool: str | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        return {"rows": await store.audit_rows(pool, run_id, tool, tenant)}

    @api.get("/_sim/arrivals")
    async def get_arrivals() -> dict[str, Any]:
        return {"arrivals": gateway.arrivals}

    @api.post("/_sim/reset")
    async def reset() -> dict[str, Any]:
        gateway.arrivals.clear()
        await store.reset(pool)
        plan.set(startup_faults)
        return {"ok": True}

    return DroppableConnections(api)
