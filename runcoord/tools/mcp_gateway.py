"""The tool gateway over MCP: tools on the MCP servers of tools.yaml's ``mcp_servers``, reached
over Streamable HTTP with the official SDK, ending in the same outcomes as over HTTP
(runcoord/tools/http_gateway.py).

A call is a ``tools/call`` of the spec's ``endpoint`` (the tool's name on its server) with the
arguments, and in the request's ``_meta``: ``io.runcoord/idempotency-key`` (the effect key, also
sent as the ``Idempotency-Key`` header of its POST), ``io.runcoord/fencing-token``,
``io.runcoord/tenant``, ``io.runcoord/run-id``, ``io.runcoord/tool-call-id`` and
``io.runcoord/request-deadline`` (unix ms). A lookup calls the tool the spec's ``lookup`` names
on the same server with ``{"ref": <effect key>}`` and ``io.runcoord/tenant``, and reads
``{"ref", "actions": [...]}``.

What MCP outcomes mean:

- a result: its ``structuredContent`` is the answer (none: its text); a replay says so in
  ``_meta["io.runcoord/replayed"]``;
- an ``isError`` result with ``structuredContent = {"error": {"type", "message", "status"}}``
  (the HTTP gateway's refusals): read as that status is over HTTP (408 ``deadline_exceeded``,
  429 or ``throttled``: NotSent; 409 ``fenced``: ToolFenced; 5xx, ``injected_fault``,
  ``storage_unavailable``: OutcomeUnknown for a write tool, NotSent for a read); any other
  status: the answer, with that status;
- an ``isError`` result without that structure: the tool's own error answer (it ran and says it
  failed; it may have acted): a 400 answer with its text. Never NotSent;
- a JSON-RPC error: invalid params: a 422 answer; method not found: a 404 answer; refused at the
  HTTP level before any tool ran (a 4xx answer to the POST: throttled, or a session the server
  no longer knows after a restart): NotSent; anything else (an internal error, or a server
  error with no JSON-RPC body): OutcomeUnknown for a write tool, NotSent for a read;
- transport: the POST never started or could not connect: NotSent; a timeout, a broken stream,
  a reset after sending: OutcomeUnknown. On a timeout the SDK tells the server it gave up
  (``notifications/cancelled``; on a 2026-07-28 session it closes the POST); the server may
  stop the tool, or not.

Before sending, from the server's ``tools/list``: a tool it does not list is a 404 answer; a
tool whose ``inputSchema`` changed since this gateway first listed it (when it was offered to
the model) is a 409 ``schema_changed``; arguments that do not fit the schema are a 422
``invalid_arguments``. None of them is sent. The listing is cached per session and asked again
when the server says its tools changed, or a new session is opened.

One session per server, opened on first use and shared by concurrent calls. When its transport
breaks, the SDK ends the session and fails the requests in flight; the next call opens a new one
(as it does after a server says it no longer knows the session). A request's own error leaves
the session, and the other calls on it, alone. Each step of a call (opening a session, listing,
the call itself) is bounded by the tool's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import anyio
import httpx2
import jsonschema
import mcp_types as types
from jsonschema.protocols import Validator
from mcp.client import Client, ClientSession, IncomingMessage, Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import SubscriptionLost
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from runcoord.errors import ConfigError
from runcoord.registry import McpServerSpec, ToolSpec
from runcoord.tools.gateway import (
    GatewayAnswer,
    GatewayError,
    LookupAnswer,
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    ToolFenced,
    deadline_of,
    needs_lookup,
    timeout_of,
)

log = logging.getLogger(__name__)

KEY = "io.runcoord/idempotency-key"
TOKEN = "io.runcoord/fencing-token"
TENANT = "io.runcoord/tenant"
RUN_ID = "io.runcoord/run-id"
TOOL_CALL_ID = "io.runcoord/tool-call-id"
DEADLINE = "io.runcoord/request-deadline"
REPLAYED = "io.runcoord/replayed"

LIST_TIMEOUT_S = 10.0  # `tools()` asked on its own, outside a call
_CLOSE_TIMEOUT_S = 5.0  # a session's goodbye (DELETE) before it is cancelled
_SETTLE_S = 5.0  # how long a failed POST's session may take to say why it ended
_RELISTEN_S = 1.0

# Raised before the POST is on the wire: it cannot have reached the server.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
# Codes that say the server answered nothing usable about this request (vs. a refusal).
_NO_ANSWER = (CONNECTION_CLOSED, REQUEST_TIMEOUT, INTERNAL_ERROR)

# What mcp.Client connects to: Streamable HTTP by default; tests pass an in-process Server.
Target = Server[Any] | Transport


@dataclass(frozen=True)
class McpTool:
    """A tool as its server lists it. ``version``: sha256 of its ``inputSchema``'s canonical
    JSON, so a changed schema is seen whatever the order of its keys."""

    name: str
    description: str
    input_schema: dict[str, Any]
    version: str

    @classmethod
    def listed(cls, tool: types.Tool) -> McpTool:
        schema = tool.input_schema
        return cls(tool.name, tool.description or "", schema, _sha256(schema))

    def problem(self, arguments: Any) -> str | None:
        """Why ``arguments`` do not fit the input schema, or None if they do."""
        if not isinstance(arguments, dict):
            return "the arguments must be a JSON object"
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"{where}: {error.message[:200]}"

    @cached_property
    def _validator(self) -> Validator:
        cls = jsonschema.validators.validator_for(self.input_schema)
        try:
            cls.check_schema(self.input_schema)
        except jsonschema.SchemaError as exc:
            raise GatewayError(f"{self.name}: its inputSchema is not a JSON Schema: {exc}") from exc
        return cls(self.input_schema)


def _sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Attempt:
    """What became of one tools/call's POST, as the HTTP client's hooks saw it: they run in the
    POST's task, which the SDK starts in a copy of the caller's context (so _ATTEMPT reaches)."""

    request: httpx2.Request | None = None  # the POST, once it was about to be sent
    status: int | None = None  # its HTTP status, once the server answered it


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("runcoord_mcp_attempt", default=None)


class _Session:
    """One session with one server. A task of its own owns the mcp.Client (anyio wants a task
    group left by the task that entered it); calls from any task share its ClientSession. When
    the transport breaks, the SDK ends the session and fails its requests in flight with
    CONNECTION_CLOSED; ``failure`` then says why."""

    def __init__(self, server: str, target: Target, over_http: bool) -> None:
        self.server = server
        self.over_http = over_http  # this gateway's HTTP hooks see each of its POSTs
        self.client = Client(target, mode="auto", message_handler=self._on_message, cache=None)
        self.rpc: ClientSession | None = None  # once open
        self.tools: dict[str, McpTool] | None = None  # None: list before the next call
        self.changes = 0  # how many times the server said its tools changed
        self.failure: Exception | None = None
        self.retired = False  # the server no longer knows it, or we closed it: open another
        self.settled = asyncio.Event()  # open, or failed to open
        self.ended = asyncio.Event()
        self._scope = anyio.CancelScope()
        self._task = asyncio.create_task(self._own(), name=f"mcp-session-{server}")

    @property
    def usable(self) -> bool:
        return not (self.ended.is_set() or self.retired)

    def forget_tools(self) -> None:
        self.tools = None
        self.changes += 1

    async def _own(self) -> None:
        try:
            async with self.client:
                self.rpc = self.client.session
                self.settled.set()
                with self._scope:
                    await self._hear_tool_changes()
        except Exception as exc:
            self.failure = exc
            # Leaving, the SDK may still fail on a late answer (a closed stream): no news.
            level = logging.DEBUG if self.retired else logging.WARNING
            log.log(level, "MCP server %s: the session ended: %s", self.server, _reason(exc))
        finally:
            self.ended.set()
            self.settled.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.forget_tools()

    async def _hear_tool_changes(self) -> None:
        """Until closed: forget the listing whenever the server says its tools changed. A
        2025-era server says so unasked (``_on_message``); a 2026-07-28 one only on a
        ``subscriptions/listen`` stream, if it serves one (else only a new session lists
        again)."""
        while self.client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            try:
                async with self.client.listen(tools_list_changed=True) as changes:
                    self.forget_tools()  # whatever changed while nobody listened
                    async for _ in changes:
                        self.forget_tools()
            except MCPError as exc:
                log.info("MCP server %s: no tools/list_changed: %s", self.server, exc)
                break
            except SubscriptionLost:
                pass
            await anyio.sleep(_RELISTEN_S)
        await anyio.sleep_forever()

    def retire(self) -> None:
        """Leave the session (calls in flight on it end) and let the next call open another."""
        self.retired = True
        self._scope.cancel()

    def abort(self) -> None:
        self.retired = True
        self._task.cancel()

    async def close(self) -> None:
        self.retire()  # the owner leaves: the SDK ends the session on the server
        done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_TIMEOUT_S)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})


class McpToolGateway:
    """The ToolGateway for tools on MCP servers (``ToolSpec.server``: a key of ``servers``).

    ``http``: the client every session's POSTs go through (default: one of the gateway's own);
    this gateway adds two event hooks to it. ``connect``: what a server's session connects to
    instead of Streamable HTTP at its URL (tests: an in-process ``mcp.server.lowlevel.Server``).
    """

    def __init__(
        self,
        servers: Mapping[str, McpServerSpec],
        http: httpx2.AsyncClient | None = None,
        *,
        connect: Callable[[str], Target] | None = None,
    ) -> None:
        self.servers = dict(servers)
        self._own_http = http is None
        self.http = http or httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0))
        hooks = self.http.event_hooks
        self.http.event_hooks = {
            "request": [*hooks["request"], self._on_request],
            "response": [*hooks["response"], self._on_response],
        }
        self._connect = connect
        self._headers: dict[str, dict[str, str]] = {}  # a server's URL -> its headers (auth)
        self._sessions: dict[str, _Session] = {}
        self._first: dict[tuple[str, str], str] = {}  # (server, tool) -> the version first listed

    async def __aenter__(self) -> McpToolGateway:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions))
        if self._own_http:
            await self.http.aclose()

    async def tools(self, server: str, timeout_s: float = LIST_TIMEOUT_S) -> dict[str, McpTool]:
        """The tools ``server`` lists: this session's listing, else asked now. Raises NotSent
        when the server cannot be asked, GatewayError when it cannot be used."""
        session = await self._session(server, timeout_s)
        return await self._listing(session, timeout_s)

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
        timeout = timeout_of(spec, timeout_s)
        deadline = deadline_of(spec, timeout_s, deadline_ms, time.time())
        session = await self._session(_server_of(spec), timeout)
        refusal = await self._refusal(session, spec, arguments, timeout)
        if refusal is not None:
            return refusal
        meta = {
            KEY: effect_key,
            TOKEN: fencing_token,
            TENANT: tenant,
            RUN_ID: run_id,
            TOOL_CALL_ID: tool_call_id,
            DEADLINE: deadline,
        }
        with _watched() as attempt:
            try:
                result = await _call_tool(session, spec.endpoint, arguments, meta, timeout)
            except MCPError as exc:
                return await _rpc_error(spec, session, attempt, exc)
            except ValidationError as exc:  # the tool may have acted: its answer is unreadable
                raise GatewayError(f"{spec.name}: a tools/call result outside MCP: {exc}") from exc
        return _answer(spec, result)

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        name, timeout = needs_lookup(spec), timeout_of(spec, timeout_s)
        try:
            session = await self._session(_server_of(spec), timeout)
        except NotSent as exc:
            raise LookupUnavailable(f"{spec.name} lookup: {exc}") from exc
        with _watched() as attempt:
            try:
                result = await _call_tool(
                    session, name, {"ref": effect_key}, {TENANT: tenant}, timeout
                )
            except MCPError as exc:
                await _mend(session, attempt, exc)
                raise LookupUnavailable(f"{spec.name} lookup: {exc}") from exc
            except ValidationError as exc:
                raise GatewayError(f"{spec.name} lookup: a result outside MCP: {exc}") from exc
        if result.is_error:
            text = _body(result).decode(errors="replace")[:300]
            raise LookupUnavailable(f"{spec.name} lookup refused: {text}")
        try:
            body = _json_of(result)
        except (ValueError, RecursionError) as exc:
            raise GatewayError(f"{spec.name} lookup answered no usable JSON: {exc!r}") from exc
        # Never read "no actions" into an answer that is not a lookup's: that would send.
        actions = (body.get("actions") or []) if isinstance(body, dict) else None
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            raise GatewayError(
                f"{spec.name} lookup: `actions` is not a list of objects: {json.dumps(body)[:300]}"
            )
        return LookupAnswer(tuple(actions))

    # ---- sessions and listings ---------------------------------------------------------

    async def _session(self, server: str, timeout: float) -> _Session:
        """The server's session; a new one if it has none, or its last one broke."""
        session = self._sessions.get(server)
        if session is None or not session.usable:
            target, over_http = self._target(server), self._connect is None
            session = self._sessions[server] = _Session(server, target, over_http)
        try:
            await asyncio.wait_for(session.settled.wait(), timeout)
        except TimeoutError:
            session.abort()
            raise NotSent(f"MCP server {server!r}: no session within {timeout}s") from None
        if session.rpc is None or session.ended.is_set():
            raise _open_failure(server, session.failure)
        return session

    def _target(self, server: str) -> Target:
        spec = self.servers.get(server)
        if spec is None:
            raise GatewayError(f"no MCP server {server!r} (mcp_servers: {sorted(self.servers)})")
        if self._connect is not None:
            return self._connect(server)
        try:
            self._headers[str(httpx2.URL(spec.url))] = spec.resolved_headers()
        except ConfigError as exc:
            raise GatewayError(str(exc)) from exc
        return streamable_http_client(spec.url, http_client=self.http)

    async def _listing(self, session: _Session, timeout: float) -> dict[str, McpTool]:
        if session.tools is not None:
            return session.tools
        changes = session.changes
        try:
            async with asyncio.timeout(timeout):
                listed = await _list_tools(_rpc(session))
        except (MCPError, TimeoutError) as exc:
            raise NotSent(f"MCP server {session.server!r}: tools/list: {exc!r}") from exc
        except ValidationError as exc:
            raise GatewayError(f"MCP server {session.server!r}: tools/list: {exc}") from exc
        tools = {t.name: McpTool.listed(t) for t in listed}
        for tool in tools.values():
            self._first.setdefault((session.server, tool.name), tool.version)
        if session.changes == changes:  # else it changed again meanwhile: list next time
            session.tools = tools
        return tools

    async def _refusal(
        self, session: _Session, spec: ToolSpec, arguments: Any, timeout: float
    ) -> GatewayAnswer | None:
        """The answer to a call that must not be sent, or None."""
        tools = await self._listing(session, timeout)
        if spec.endpoint not in tools:  # perhaps added since it was listed: ask once more
            session.forget_tools()
            tools = await self._listing(session, timeout)
        tool = tools.get(spec.endpoint)
        if tool is None:
            return _refused(
                404, "unknown_tool", f"MCP server {session.server!r} has no tool {spec.endpoint!r}"
            )
        if tool.version != self._first[(session.server, tool.name)]:
            return _refused(
                409,
                "schema_changed",
                f"{tool.name}'s inputSchema changed since it was offered: not sent",
            )
        problem = tool.problem(arguments)
        if problem is not None:
            return _refused(
                422, "invalid_arguments", f"arguments do not fit {tool.name}'s schema: {problem}"
            )
        return None

    # ---- what the HTTP client sees -------------------------------------------------------

    async def _on_request(self, request: httpx2.Request) -> None:
        """Every request of every session: its server's headers. A tools/call's POST also gets
        its effect key as ``Idempotency-Key`` (read from the message itself, as one session
        carries every call), and is noted for its call (_Attempt)."""
        request.headers.update(self._headers.get(str(request.url), {}))
        params = _tools_call_params(request)
        if params is None:
            return
        meta = params.get("_meta")
        key = meta.get(KEY) if isinstance(meta, dict) else None
        if isinstance(key, str):
            request.headers["Idempotency-Key"] = key
        attempt = _ATTEMPT.get()
        if attempt is not None:
            attempt.request = request

    async def _on_response(self, response: httpx2.Response) -> None:
        attempt = _ATTEMPT.get()
        if attempt is not None and response.request is attempt.request:
            attempt.status = response.status_code


@contextlib.contextmanager
def _watched() -> Iterator[_Attempt]:
    """An _Attempt that this task's tools/call POST will fill in."""
    attempt = _Attempt()
    reset = _ATTEMPT.set(attempt)
    try:
        yield attempt
    finally:
        _ATTEMPT.reset(reset)


async def _rpc_error(
    spec: ToolSpec, session: _Session, attempt: _Attempt, exc: MCPError
) -> GatewayAnswer:
    """A JSON-RPC error: the server's, or the SDK's own word for a transport failure."""
    await _mend(session, attempt, exc)
    if exc.code == INVALID_PARAMS:
        return _refused(422, "invalid_params", exc.message)
    if exc.code == METHOD_NOT_FOUND:
        return _refused(404, "unknown_tool", f"{spec.endpoint}: {exc.message}")
    if exc.code == REQUEST_TIMEOUT:
        raise OutcomeUnknown(f"{spec.name}: no answer in time (the server was told)")
    if exc.code == CONNECTION_CLOSED:
        if _never_sent(session, attempt):
            raise NotSent(f"{spec.name}: not sent: {_reason(session.failure)}")
        raise OutcomeUnknown(f"{spec.name}: connection lost: {_reason(session.failure)}")
    if attempt.status is not None and 400 <= attempt.status < 500:  # before any tool ran
        raise NotSent(f"{spec.name}: HTTP {attempt.status}: {exc.message}")
    if spec.write:  # an internal error does not say whether the tool acted
        raise OutcomeUnknown(f"{spec.name}: JSON-RPC error {exc.code}: {exc.message}")
    raise NotSent(f"{spec.name}: JSON-RPC error {exc.code}: {exc.message}")


async def _mend(session: _Session, attempt: _Attempt, exc: MCPError) -> None:
    """What a JSON-RPC error says of the session itself, so that the next call has a working
    one (any other error is the request's alone: the session, and the calls in flight on it,
    live on).

    - CONNECTION_CLOSED with no HTTP answer to the POST (over HTTP): the POST raised, or never
      started as the session was closing; either way the SDK is ending the session: wait until
      it has (``failure`` then says what became of the POST). Answered, it was one broken
      stream;
    - an invalid request refused at the HTTP level: the server does not know the session (it
      restarted): open another;
    - the headers do not match the tool's schema (2026-07-28): it changed: list it again.
    """
    refused = attempt.status is not None and 400 <= attempt.status < 500
    if exc.code == CONNECTION_CLOSED and session.over_http and attempt.status is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.ended.wait(), _SETTLE_S)
    elif exc.code == INVALID_REQUEST and refused:
        session.retire()
    elif exc.code == HEADER_MISMATCH:
        session.forget_tools()


def _never_sent(session: _Session, attempt: _Attempt) -> bool:
    """After CONNECTION_CLOSED: whether the call's POST certainly never reached the server (it
    never started, or could not connect). Only this gateway's HTTP hooks can tell."""
    if not session.over_http or attempt.status is not None:
        return False
    if attempt.request is None:
        return True
    return any(
        isinstance(e, _NOT_SENT) and _request_of(e) is attempt.request
        for e in _leaves(session.failure)
    )


async def _call_tool(
    session: _Session, name: str, arguments: Any, meta: dict[str, Any], timeout: float
) -> types.CallToolResult:
    """A raw tools/call (no SDK output-schema check: a write's answer is never thrown away)."""
    request = types.CallToolRequest(
        params=types.CallToolRequestParams(
            name=name, arguments=arguments, _meta=cast(types.RequestParamsMeta, meta)
        )
    )
    return await _rpc(session).send_request(
        request, types.CallToolResult, request_read_timeout_seconds=timeout
    )


async def _list_tools(rpc: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
        page = await rpc.list_tools(params=params)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            return tools


def _rpc(session: _Session) -> ClientSession:
    assert session.rpc is not None  # _session() hands out open sessions only
    return session.rpc


def _answer(spec: ToolSpec, result: types.CallToolResult) -> GatewayAnswer:
    body = _body(result)
    if not result.is_error:
        return GatewayAnswer(200, body, replayed=(result.meta or {}).get(REPLAYED) is True)
    error = _refusal_of(result)
    if error is None:  # the tool's own error answer: it ran
        return GatewayAnswer(400, body)
    status, kind, message = error["status"], error["type"], error.get("message")
    if status == 408 and kind == "deadline_exceeded":
        raise NotSent(f"408: past its deadline, not acted on: {message}")
    if status == 409 and kind == "fenced":
        seen = error.get("seen")
        raise ToolFenced(
            f"{spec.name}: fencing token refused: {message}",
            seen=seen if isinstance(seen, int) and not isinstance(seen, bool) else None,
        )
    if status == 429 or kind == "throttled":
        raise NotSent(f"{status} {kind}: throttled before acting")
    if status >= 500 or kind in ("injected_fault", "storage_unavailable"):
        # Like an HTTP 5xx: it does not say whether the tool acted before failing.
        if spec.write:
            raise OutcomeUnknown(f"{status} {kind}: {message}")
        raise NotSent(f"{status} {kind}: {message}")
    return GatewayAnswer(status, body)


def _refusal_of(result: types.CallToolResult) -> dict[str, Any] | None:
    """The ``error`` of an isError result in the HTTP gateway's shape, or None."""
    content = result.structured_content
    error = content.get("error") if isinstance(content, dict) else None
    if not isinstance(error, dict):
        return None
    status = error.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status < 600:
        return None
    return error if isinstance(error.get("type"), str) else None


def _body(result: types.CallToolResult) -> bytes:
    """The answer's bytes: ``structuredContent`` as JSON, else the text of its text blocks."""
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False).encode()
    texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
    return "\n".join(texts).encode()


def _json_of(result: types.CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(_body(result))


def _refused(status: int, kind: str, message: str) -> GatewayAnswer:
    return GatewayAnswer(status, json.dumps({"error": {"type": kind, "message": message}}).encode())


def _server_of(spec: ToolSpec) -> str:
    if spec.server is None:
        raise GatewayError(f"{spec.name} is not on an MCP server")
    return spec.server


def _tools_call_params(request: httpx2.Request) -> dict[str, Any] | None:
    """The params of the tools/call a POST carries, or None."""
    if request.method != "POST":
        return None
    try:
        message = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params")
    return params if isinstance(params, dict) else None


def _open_failure(server: str, failure: BaseException | None) -> Exception:
    """Why a session did not open, in the port's terms. The call was not sent either way;
    GatewayError when the server answered and cannot be used as configured."""
    transient = all(
        isinstance(e, httpx2.TransportError | OSError | TimeoutError)
        or (isinstance(e, MCPError) and e.code in _NO_ANSWER)
        for e in _leaves(failure)
    )
    if transient:
        return NotSent(f"MCP server {server!r}: no session: {_reason(failure)}")
    return GatewayError(f"MCP server {server!r}: cannot open a session: {_reason(failure)}")


def _leaves(exc: BaseException | None) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    elif exc is not None:
        yield exc


def _reason(exc: BaseException | None) -> str:
    return ", ".join(repr(e) for e in _leaves(exc)) or "cancelled"


def _request_of(exc: BaseException) -> httpx2.Request | None:
    try:
        return exc.request if isinstance(exc, httpx2.RequestError) else None
    except RuntimeError:  # httpx2 never set it
        return None
