"""The sandbox tool gateway over MCP (Model Context Protocol, Streamable HTTP), at ``/mcp``.

The same tools, store, fault plan and arrivals as the HTTP routes (gateway.py's Gateway): a call
meets the same rules and leaves the same audit rows whichever way it came.

``tools/list``: every catalog tool, ``inputSchema`` its arguments' JSON schema, plus
``update_crm_actions`` ({"ref": <key>}), update_crm's reconcile lookup. The annotations say
what the tool does (``idempotentHint`` for the key-honouring writes); a client must not
trust them, which is the point of offering them.

``tools/call``: request ``_meta`` carries what the HTTP headers carry::

    io.runcoord/idempotency-key   str   (else the HTTP Idempotency-Key header: clients send both)
    io.runcoord/fencing-token     int
    io.runcoord/tenant            str   (required for writes)
    io.runcoord/run-id            str
    io.runcoord/tool-call-id      str
    io.runcoord/request-deadline  int   (unix ms)

An answer is ``structuredContent`` (and the same JSON as text); a repeat a key-honouring tool
answers from its records has result ``_meta`` ``{"io.runcoord/replayed": true}``. A refusal is
``isError`` with ``{"error": {"type", "message", "status", ...}}``, type and status as the HTTP
gateway's (``missing_meta`` / ``invalid_meta`` for its header errors). An unknown tool name is
a JSON-RPC error (-32602, as the MCP spec asks).

Stateless: every POST stands alone, so a gateway restart strands no client session. Answers
are SSE streams, and drop_after_act cuts one after its headers (McpEndpoint sends them if the
SDK has not yet: it holds them back on a 2026-07-28 request), so that the official client's
call fails as a broken stream (MCPError -32000 "SSE stream ended without a response") and its
session lives on. Cut before any headers, the client's transport raises out of its task group
instead and takes the whole session with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    ToolAnnotations,
)
from mcp_types import Tool as McpTool
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from runcoord.sim.tools.catalog import TOOLS, Tool
from runcoord.sim.tools.gateway import (
    Answer,
    CallMeta,
    Gateway,
    Names,
    dropper,
    invalid_arguments,
    refusal,
)

KEY = "io.runcoord/idempotency-key"
TOKEN = "io.runcoord/fencing-token"
TENANT = "io.runcoord/tenant"
RUN_ID = "io.runcoord/run-id"
TOOL_CALL_ID = "io.runcoord/tool-call-id"
DEADLINE = "io.runcoord/request-deadline"
REPLAYED = "io.runcoord/replayed"

LOOKUP = "update_crm_actions"

# The scope key of McpEndpoint's drop: headers first if need be, then the connection.
_DROP_STREAM = "runcoord.sim.tools.mcp.drop_stream"
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

NAMES = Names(
    tenant=f"_meta {TENANT}",
    key=f"_meta {KEY}",
    token=f"_meta {TOKEN}",
    deadline=f"_meta {DEADLINE}",
    missing="missing_meta",
    invalid="invalid_meta",
)

# What each tool is for, as tools.yaml tells the model (not imported: the sandbox stands for
# the outside world and shares no code with the product).
_PURPOSE = {
    "create_ticket": "Open a support ticket for the customer.",
    "send_email": "Send an email to the customer.",
    "charge_card": "Charge the customer's card on file (sandbox).",
    "update_crm": "Update fields of the customer's CRM record.",
    "post_note": "Post an internal note, on a ticket or on its own.",
    "lookup_customer": "Look up a customer's profile.",
    "search_kb": "Search the knowledge base.",
    "get_order_status": "Get the status of an order.",
}


class _Ref(BaseModel):
    """update_crm_actions' arguments: the idempotency key its update_crm calls carried."""

    model_config = ConfigDict(extra="allow")

    ref: str


def _description(tool: Tool) -> str:
    purpose = _PURPOSE.get(tool.name, tool.name)
    if tool.kind == "read":
        return f"{purpose} Read-only."
    if tool.idempotency == "key":
        rule = (
            f"Acts once per {KEY}: a repeat answers the first action (result _meta "
            f"{REPLAYED}) without acting again."
        )
    else:
        rule = f"Acts on every call; {KEY} is only recorded."
    if tool.lookup:
        rule += f" Its actions: {LOOKUP} with ref = that key."
    return f"{purpose} {rule} Needs {TENANT}."


def _listed(tool: Tool) -> McpTool:
    write = tool.kind == "write"
    return McpTool(
        name=tool.name,
        description=_description(tool),
        input_schema=tool.args.model_json_schema(),
        annotations=ToolAnnotations(
            read_only_hint=not write,
            idempotent_hint=tool.idempotency == "key" if write else None,
        ),
    )


LISTING = [
    *(_listed(t) for t in TOOLS.values()),
    McpTool(
        name=LOOKUP,
        description=(
            f"update_crm's actions whose {KEY} was `ref` (the tenant's, with {TENANT}): "
            '{"ref": ..., "actions": [...]}. Read-only.'
        ),
        input_schema=_Ref.model_json_schema(),
        annotations=ToolAnnotations(read_only_hint=True),
    ),
]


def _text(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _malformed(meta: Mapping[str, Any]) -> Answer | None:
    for key in (KEY, TENANT, RUN_ID, TOOL_CALL_ID):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            return refusal(400, "invalid_meta", f"_meta {key} must be a string")
    for key, what in ((TOKEN, "an integer"), (DEADLINE, "unix milliseconds (an integer)")):
        value = meta.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return refusal(400, "invalid_meta", f"_meta {key} must be {what}")
    return None


def _call_meta(meta: Mapping[str, Any], header_key: str | None) -> CallMeta | Answer:
    if (problem := _malformed(meta)) is not None:
        return problem
    return CallMeta(
        tenant=meta.get(TENANT),
        run_id=meta.get(RUN_ID),
        tool_call_id=meta.get(TOOL_CALL_ID),
        idempotency_key=meta.get(KEY) or header_key,
        fencing_token=meta.get(TOKEN),
        deadline_ms=meta.get(DEADLINE),
    )


def _result(answer: Answer) -> CallToolResult:
    body = answer.body
    failed = answer.status >= 400
    if failed:
        error = dict(body["error"])
        kind, message = error.pop("type"), error.pop("message")
        body = {"error": {"type": kind, "message": message, "status": answer.status, **error}}
    return CallToolResult(
        content=[TextContent(text=json.dumps(body, ensure_ascii=False))],
        structured_content=body,
        is_error=failed,
        _meta={REPLAYED: True} if answer.replayed else None,
    )


class McpEndpoint:
    """The MCP server on ``gateway`` as an ASGI app (mounted at /mcp by create_app); ``run()``
    must be entered for the app's lifetime."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        server: Server[Any] = Server(
            "runcoord-sandbox-tools", on_list_tools=self._list_tools, on_call_tool=self._call_tool
        )
        # No DNS-rebinding check: like the HTTP routes, it is reached by other hosts' names
        # (compose).
        self.manager = StreamableHTTPSessionManager(server, stateless=True, json_response=False)
        self._app = StreamableHTTPASGIApp(self.manager)

    def run(self) -> AbstractAsyncContextManager[None]:
        return self.manager.run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def drop_stream() -> None:
            # The SDK sends an SSE answer's headers before the tool runs on a handshake-era
            # request, not on a 2026-07-28 one (it holds them back for a quick JSON answer):
            # send them, so the cut is a broken stream in either era (module docstring).
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await dropper(scope)()

        await self._app({**scope, _DROP_STREAM: drop_stream}, receive, watched)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=LISTING)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        meta: Mapping[str, Any] = params.meta or {}
        arguments = params.arguments or {}
        if params.name == LOOKUP:
            return await _lookup(self.gateway, arguments, meta)
        self.gateway.arrived(params.name, _text(meta, RUN_ID), _text(meta, TOOL_CALL_ID), "mcp")
        tool = TOOLS.get(params.name)
        if tool is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
        # The HTTP request that carried this message: the SDK hands it down as ctx.request.
        request = ctx.request if isinstance(ctx.request, Request) else None
        header_key = request.headers.get("idempotency-key") if request else None
        drop = (request.scope if request else {}).get(_DROP_STREAM, dropper({}))
        # A caller that gives up does not stop the request, as over HTTP: the write still
        # acts, and its answer goes nowhere. (The SDK cancels a 2026-07-28 request's handler
        # when its caller closes the stream, after a read timeout for one.)
        with anyio.CancelScope(shield=True):
            answer = await self.gateway.call(
                tool, arguments, _call_meta(meta, header_key), NAMES, drop
            )
        return _result(answer)


async def _lookup(
    gateway: Gateway, arguments: dict[str, Any], meta: Mapping[str, Any]
) -> CallToolResult:
    """As GET /tools/update_crm/actions: no faults, no arrival (it is no catalog tool)."""
    try:
        ref = _Ref.model_validate(arguments).ref
    except ValidationError as exc:
        return _result(invalid_arguments(exc))
    if meta.get(TENANT) is not None and not isinstance(meta[TENANT], str):
        return _result(refusal(400, "invalid_meta", f"_meta {TENANT} must be a string"))
    return _result(await gateway.actions(ref, meta.get(TENANT)))
