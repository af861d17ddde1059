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

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.routing import Route

from runcoord import tracing
from runcoord.sim.tools import store
from runcoord.sim.tools.catalog import TOOLS
from runcoord.sim.tools.connection import DroppableConnections
from runcoord.sim.tools.faults import FaultConfig, FaultPlan
from runcoord.sim.tools.gateway import (
    Answer,
    CallMeta,
    Gateway,
    Names,
    dropper,
    refusal,
)
from runcoord.sim.tools.mcp import McpEndpoint

log = logging.getLogger(__name__)

# How the HTTP routes spell a call's fields and their errors.
HEADERS = Names(
    tenant="X-Tenant",
    key="Idempotency-Key",
    token="X-Fencing-Token",
    deadline="X-Request-Deadline",
    missing="missing_header",
    invalid="invalid_header",
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
