"""The sandbox tool gateway (FastAPI).

POST /tools/{name}                 call a tool; JSON body = its arguments; headers
                                   Idempotency-Key, X-Fencing-Token, X-Tenant, X-Run-Id,
                                   X-Tool-Call-Id, X-Request-Deadline. A write whose token
                                   is lower than one seen for its key: 409 `fenced`; one that
                                   comes to act past its deadline: 408 `deadline_exceeded`
                                   (neither acts; tools.yaml, "Request deadlines and fencing")
GET  /tools/update_crm/actions?ref=<Idempotency-Key>   update_crm's reconcile lookup
GET  /tools                        the catalog
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from runcoord import tracing
from runcoord.sim.tools import store
from runcoord.sim.tools.catalog import TOOLS, Tool
from runcoord.sim.tools.connection import DROP, DroppableConnections
from runcoord.sim.tools.faults import FaultConfig, FaultPlan

log = logging.getLogger(__name__)


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


def _integer(raw: str) -> bool:
    return raw.strip().lstrip("-").isdigit()


def create_app(
    dsn: str, faults: FaultConfig | None = None, pool_size: int = 10
) -> DroppableConnections:
    startup_faults = faults or FaultConfig()
    startup_faults.check_tools(TOOLS)
    plan = FaultPlan(startup_faults)
    pool = store.AsyncPool(dsn, pool_size)
    # When each tool request arrived, before anything else happens to it: when a tool call
    # reached the gateway, for reads too (the audit log holds writes only). In memory: a
    # restart forgets them.
    arrivals: list[dict[str, Any]] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await pool.close()

    api = FastAPI(title="runcoord sandbox tool gateway", lifespan=lifespan)
    # A span per tool call, the child of the caller's traceparent (the executor's intent span).
    tracing.instrument(api, exclude=("/_sim/",))

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
        tenant = request.headers.get("x-tenant")
        try:
            rows = await store.actions_by_ref(pool, "update_crm", ref, tenant)
        except psycopg.OperationalError as exc:
            return _error(503, "storage_unavailable", str(exc))
        return JSONResponse({"ref": ref, "actions": rows})

    @api.post("/tools/{name}")
    async def call_tool(name: str, request: Request) -> Response:
        arrivals.append(
            {
                "tool": name,
                "run_id": request.headers.get("x-run-id"),
                "tool_call_id": request.headers.get("x-tool-call-id"),
                "at": time.time(),
            }
        )
        tool = TOOLS.get(name)
        if tool is None:
            return _error(404, "unknown_tool", f"no tool named {name!r}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_json", "the body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "invalid_json", "the body must be a JSON object")
        try:
            args = tool.args.model_validate(body)
        except ValidationError as exc:
            return _error(422, "invalid_arguments", "bad tool arguments", details=exc.errors())
        h = request.headers
        tracing.annotate(
            tool=name,
            run_id=h.get("x-run-id"),
            tool_call_id=h.get("x-tool-call-id"),
            effect_key=h.get("idempotency-key"),
        )
        token_raw = h.get("x-fencing-token")
        if token_raw is not None and not _integer(token_raw):
            return _error(400, "invalid_header", "X-Fencing-Token must be an integer")
        deadline_raw = h.get("x-request-deadline")
        if deadline_raw is not None and not _integer(deadline_raw):
            return _error(400, "invalid_header", "X-Request-Deadline must be unix milliseconds")
        phash = store.payload_hash(body)
        identity = h.get("idempotency-key") or h.get("x-tool-call-id") or phash
        decision = plan.decide(name, identity)
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.error_status is not None:
            return _error(decision.error_status, "injected_fault", "try again; nothing was done")
        if tool.kind == "read":
            return JSONResponse(tool.respond(args, None))
        tenant = h.get("x-tenant")
        if not tenant:
            return _error(400, "missing_header", "X-Tenant is required for write tools")
        call = store.Call(
            tool=name,
            tenant=tenant,
            run_id=h.get("x-run-id"),
            tool_call_id=h.get("x-tool-call-id"),
            idempotency_key=h.get("idempotency-key"),
            fencing_token=None if token_raw is None else int(token_raw),
            payload_hash=phash,
            dedupe=tool.idempotency == "key",
            record_ref=tool.lookup,
            deadline_ms=None if deadline_raw is None else int(deadline_raw),
        )
        return await _write(request, tool, args, call, decision.slow_s, decision.drop)

    async def _write(
        request: Request, tool: Tool, args: Any, call: store.Call, slow_s: float, drop: bool
    ) -> Response:
        try:
            outcome = await store.act(pool, call, lambda audit_id: tool.respond(args, audit_id))
        except psycopg.OperationalError as exc:
            # Commit may or may not have happened: like a real tool, we cannot say.
            return _error(503, "storage_unavailable", str(exc))
        if isinstance(outcome, store.Refused):
            if outcome.reason == "fenced":
                return _error(
                    409,
                    "fenced",
                    f"X-Fencing-Token {call.fencing_token} is older than {outcome.seen}, already "
                    "seen for this Idempotency-Key: not acted on",
                    seen=outcome.seen,
                )
            return _error(
                408,
                "deadline_exceeded",
                f"X-Request-Deadline {call.deadline_ms} had passed ({outcome.now_ms}) when the "
                "request came to act: not acted on",
            )
        if outcome.conflict:
            return _error(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request body",
            )
        if outcome.replayed:
            return JSONResponse(outcome.response, headers={"Idempotent-Replayed": "true"})
        if drop:
            await request.scope[DROP]()
            return Response()  # swallowed: the connection is gone
        if slow_s:
            await asyncio.sleep(slow_s)
        return JSONResponse(outcome.response)

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
        return {"arrivals": arrivals}

    @api.post("/_sim/reset")
    async def reset() -> dict[str, Any]:
        arrivals.clear()
        await store.reset(pool)
        plan.set(startup_faults)
        return {"ok": True}

    return DroppableConnections(api)
