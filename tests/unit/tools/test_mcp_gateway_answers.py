"""McpToolGateway: what each MCP outcome means to the executor (the table in
runcoord/tools/mcp_gateway.py), against a low-level MCP server of the official SDK whose tools
answer what each test sets. Mostly through mcp.Client's in-memory pairing; what only HTTP can
show (the Idempotency-Key header, a POST that could not connect or was reset, an HTTP refusal,
a session opened again) through the SDK's Streamable HTTP app behind an in-process ASGI
transport. No network."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND

from runcoord.registry import McpServerSpec, ToolSpec
from runcoord.tools.gateway import (
    GatewayAnswer,
    GatewayError,
    LookupAnswer,
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    ToolFenced,
)
from runcoord.tools.mcp_gateway import McpToolGateway
from runcoord.tools.routing_gateway import RoutingGateway

pytestmark = pytest.mark.anyio

WRITE = ToolSpec(
    name="act", endpoint="act", server="fake", kind="write", idempotency="none", lookup="act_log"
)
READ = ToolSpec(name="peek", endpoint="peek", server="fake", kind="read", idempotency="none")
SCHEMA = {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}}
ARGS = {"x": 1}

Handler = Callable[[types.CallToolRequestParams], Awaitable[types.CallToolResult]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def result(**wire: Any) -> types.CallToolResult:
    """A tools/call result as it travels (``structuredContent``, ``isError``, ``_meta``)."""
    return types.CallToolResult.model_validate({"content": [], **wire})


def text(value: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": value}]


def refusal(status: int, kind: str, **extra: Any) -> types.CallToolResult:
    error = {"type": kind, "message": f"{kind}!", "status": status, **extra}
    return result(content=text(kind), structuredContent={"error": error}, isError=True)


class FakeServer:
    """An in-process MCP server: ``act``, ``peek`` and ``act_log`` answer what ``handlers``
    say (default: ``{"ok": true}``); every call it gets is kept in ``calls``."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {
            "act": SCHEMA,
            "peek": SCHEMA,
            "act_log": {"type": "object"},
        }
        self.handlers: dict[str, Handler] = {}
        self.calls: list[types.CallToolRequestParams] = []
        self.listings = 0
        self.bus = InMemorySubscriptionBus()
        self.server = Server(
            "fake",
            on_list_tools=self._list,
            on_call_tool=self._call,
            on_subscriptions_listen=ListenHandler(self.bus),
        )

    def answers(self, tool: str, answer: types.CallToolResult | Exception) -> None:
        async def handler(_: types.CallToolRequestParams) -> types.CallToolResult:
            if isinstance(answer, Exception):
                raise answer
            return answer

        self.handlers[tool] = handler

    async def _list(self, _: Any, __: Any) -> types.ListToolsResult:
        self.listings += 1
        listed = [types.Tool(name=n, input_schema=s) for n, s in self.schemas.items()]
        return types.ListToolsResult(tools=listed)

    async def _call(self, _: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        self.calls.append(params)
        handler = self.handlers.get(params.name)
        if handler is None:
            return result(content=text("ok"), structuredContent={"ok": True})
        return await handler(params)


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def gateway(fake: FakeServer) -> AsyncIterator[McpToolGateway]:
    servers = {"fake": McpServerSpec(url="http://fake.test/mcp")}
    async with McpToolGateway(servers, connect=lambda _: fake.server) as gateway:
        yield gateway


async def call(
    gateway: McpToolGateway, spec: ToolSpec = WRITE, args: Any = None, **extra: Any
) -> GatewayAnswer:
    return await gateway.call(
        spec,
        ARGS if args is None else args,
        effect_key="ek-1",
        fencing_token=3,
        tenant="t1",
        run_id="run-1",
        tool_call_id="call-1",
        **extra,
    )


# ---- answers -----------------------------------------------------------------------------


async def test_an_answer_is_its_structured_content(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    fake.answers("act", result(content=text("a ticket"), structuredContent={"ticket": "TCK-1"}))
    answer = await call(gateway)
    assert (answer.status, answer.replayed) == (200, False)
    assert json.loads(answer.body) == {"ticket": "TCK-1"}


async def test_a_replayed_answer_says_so(gateway: McpToolGateway, fake: FakeServer) -> None:
    replay = result(structuredContent={"ticket": "TCK-1"}, _meta={"io.runcoord/replayed": True})
    fake.answers("act", replay)
    assert (await call(gateway)).replayed


@pytest.mark.parametrize("words", ['{"a": 1}', "plain words"])
async def test_without_structured_content_the_answer_is_its_text(
    gateway: McpToolGateway, fake: FakeServer, words: str
) -> None:
    fake.answers("act", result(content=text(words)))
    answer = await call(gateway)
    assert (answer.status, answer.body) == (200, words.encode())


async def test_the_call_carries_the_effect_key_token_ids_and_deadline(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    before = time.time()
    await call(gateway)
    (sent,) = fake.calls
    meta = sent.meta or {}
    assert (sent.name, sent.arguments) == ("act", ARGS)
    assert {k: v for k, v in meta.items() if k.startswith("io.runcoord/")} == {
        "io.runcoord/idempotency-key": "ek-1",
        "io.runcoord/fencing-token": 3,
        "io.runcoord/tenant": "t1",
        "io.runcoord/run-id": "run-1",
        "io.runcoord/tool-call-id": "call-1",
        "io.runcoord/request-deadline": meta["io.runcoord/request-deadline"],
    }
    deadline_ms = meta["io.runcoord/request-deadline"]
    assert int(before * 1000) + 5000 <= deadline_ms <= time.time() * 1000 + 5000, (
        "the send time plus the tool's timeout"
    )


# ---- refusals: what the HTTP gateway's statuses mean -------------------------------------


@pytest.mark.parametrize(
    ("answer", "spec", "expected"),
    [
        (refusal(409, "fenced", seen=5), WRITE, ToolFenced),
        (refusal(408, "deadline_exceeded"), WRITE, NotSent),
        (refusal(429, "throttled"), WRITE, NotSent),
        (refusal(503, "injected_fault"), WRITE, OutcomeUnknown),
        (refusal(503, "injected_fault"), READ, NotSent),
        (refusal(503, "storage_unavailable"), WRITE, OutcomeUnknown),
        (refusal(500, "whatever"), WRITE, OutcomeUnknown),
        (refusal(502, "whatever"), READ, NotSent),
        (refusal(422, "idempotency_key_reused"), WRITE, 422),
        (refusal(409, "conflict"), WRITE, 409),
        (refusal(408, "slow_client"), WRITE, 408),
        (refusal(404, "unknown_customer"), READ, 404),
    ],
    ids=lambda v: v if isinstance(v, int) else getattr(v, "__name__", None),
)
async def test_a_refusal_means_what_its_status_means_over_http(
    gateway: McpToolGateway,
    fake: FakeServer,
    answer: types.CallToolResult,
    spec: ToolSpec,
    expected: type[Exception] | int,
) -> None:
    fake.answers(spec.endpoint, answer)
    if isinstance(expected, int):
        got = await call(gateway, spec)
        assert (got.status, got.ok) == (expected, False)
        assert json.loads(got.body) == answer.structured_content, "the refusal as it came"
        return
    with pytest.raises(expected) as raised:
        await call(gateway, spec)
    if isinstance(raised.value, ToolFenced):
        assert raised.value.seen == 5


@pytest.mark.parametrize(
    "answer",
    [
        result(content=text("the CRM said no"), isError=True),
        result(content=text("x"), structuredContent={"error": "no status"}, isError=True),
        refusal(200, "not_a_refusal"),
    ],
    ids=["text", "error-not-an-object", "status-not-an-error"],
)
async def test_a_tools_own_error_is_its_answer_never_not_sent(
    gateway: McpToolGateway, fake: FakeServer, answer: types.CallToolResult
) -> None:
    """It ran and says it failed: the model hears it, and nothing sends it again."""
    fake.answers("act", answer)
    got = await call(gateway)
    assert (got.status, got.ok) == (400, False)
    expected = answer.structured_content
    assert got.body == (json.dumps(expected).encode() if expected else b"the CRM said no")


# ---- JSON-RPC errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "spec", "expected"),
    [
        (MCPError(INVALID_PARAMS, "x must be an integer"), WRITE, 422),
        (MCPError(METHOD_NOT_FOUND, "no such tool"), WRITE, 404),
        (MCPError(INTERNAL_ERROR, "it broke"), WRITE, OutcomeUnknown),
        (MCPError(INTERNAL_ERROR, "it broke"), READ, NotSent),
        (RuntimeError("the handler raised"), WRITE, OutcomeUnknown),
        (RuntimeError("the handler raised"), READ, NotSent),
    ],
    ids=lambda v: v if isinstance(v, int) else getattr(v, "__name__", None),
)
async def test_a_json_rpc_error_means(
    gateway: McpToolGateway,
    fake: FakeServer,
    error: Exception,
    spec: ToolSpec,
    expected: type[Exception] | int,
) -> None:
    fake.answers(spec.endpoint, error)
    if isinstance(expected, int):
        got = await call(gateway, spec)
        assert (got.status, got.ok) == (expected, False)
        assert str(error) in got.message()
    else:
        with pytest.raises(expected):
            await call(gateway, spec)


async def test_no_answer_in_time_is_outcome_unknown_and_the_server_is_told(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    stopped = anyio.Event()

    async def slow(_: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            await anyio.sleep(10)
        finally:
            stopped.set()
        raise AssertionError("not reached")

    fake.handlers["act"] = slow
    with pytest.raises(OutcomeUnknown):
        await call(gateway, timeout_s=0.2)
    with anyio.fail_after(2):
        await stopped.wait()  # the SDK cancelled the request on the server


# ---- refused before sending --------------------------------------------------------------


async def test_a_tool_the_server_does_not_list_is_a_404_not_sent(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    spec = WRITE.model_copy(update={"name": "gone", "endpoint": "gone"})
    answer = await call(gateway, spec)
    assert answer.status == 404 and "gone" in answer.message()
    assert fake.calls == []


async def test_arguments_that_do_not_fit_the_schema_are_a_422_not_sent(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    for args in ({"x": "one"}, {}, ["x"]):
        answer = await call(gateway, args=args)
        assert answer.status == 422 and "invalid_arguments" in answer.body.decode()
    assert fake.calls == []


async def test_the_listing_is_cached_and_versioned_by_its_schema(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    await call(gateway)
    await call(gateway, READ)
    assert fake.listings == 1
    tool = (await gateway.tools("fake"))["act"]
    canonical = json.dumps(SCHEMA, sort_keys=True, separators=(",", ":"))
    assert tool.version == hashlib.sha256(canonical.encode()).hexdigest()
    assert tool.input_schema == SCHEMA


async def test_a_schema_changed_since_it_was_offered_is_a_409_not_sent(
    gateway: McpToolGateway, fake: FakeServer
) -> None:
    offered = (await gateway.tools("fake"))["act"].version
    fake.schemas["act"] = {**SCHEMA, "properties": {"x": {"type": "string"}}}
    await fake.bus.publish(ToolsListChanged())
    with anyio.fail_after(5):  # the session hears of it, and lists again
        while (await gateway.tools("fake"))["act"].version == offered:
            await anyio.sleep(0.02)
    answer = await call(gateway, args={"x": "1"})
    assert answer.status == 409 and "schema_changed" in answer.body.decode()
    assert fake.calls == []
    assert (await call(gateway, READ)).ok, "the other tools are still offered as they were"


# ---- lookups -----------------------------------------------------------------------------


async def test_a_lookup_reads_the_tools_actions(gateway: McpToolGateway, fake: FakeServer) -> None:
    actions = [{"audit_id": 7, "response": {"ok": True}, "tenant": "t1"}]
    fake.answers("act_log", result(structuredContent={"ref": "ek-1", "actions": actions}))
    found = await gateway.lookup(WRITE, effect_key="ek-1", tenant="t1")
    assert found == LookupAnswer(tuple(actions))
    (asked,) = fake.calls
    assert (asked.name, asked.arguments) == ("act_log", {"ref": "ek-1"})
    assert (asked.meta or {})["io.runcoord/tenant"] == "t1"


@pytest.mark.parametrize(
    "answer",
    [
        result(structuredContent={"actions": 3}),
        result(structuredContent={"actions": ["x"]}),
        result(content=text("not json")),
    ],
    ids=["not-a-list", "not-objects", "not-json"],
)
async def test_a_lookup_answer_that_is_not_a_lookups_is_a_gateway_error(
    gateway: McpToolGateway, fake: FakeServer, answer: types.CallToolResult
) -> None:
    fake.answers("act_log", answer)
    with pytest.raises(GatewayError, match="act lookup"):
        await gateway.lookup(WRITE, effect_key="ek-1", tenant="t1")


@pytest.mark.parametrize(
    "answer", [refusal(503, "storage_unavailable"), MCPError(INTERNAL_ERROR, "down")]
)
async def test_a_lookup_that_cannot_be_answered_is_unavailable(
    gateway: McpToolGateway, fake: FakeServer, answer: types.CallToolResult | Exception
) -> None:
    fake.answers("act_log", answer)
    with pytest.raises(LookupUnavailable):
        await gateway.lookup(WRITE, effect_key="ek-1", tenant="t1")


async def test_a_lookup_of_a_tool_without_one_is_an_error(gateway: McpToolGateway) -> None:
    with pytest.raises(ValueError):
        await gateway.lookup(READ, effect_key="ek-1", tenant="t1")


# ---- routing -----------------------------------------------------------------------------


class Recording:
    def __init__(self) -> None:
        self.specs: list[ToolSpec] = []

    async def call(self, spec: ToolSpec, arguments: Any, **_: Any) -> GatewayAnswer:
        self.specs.append(spec)
        return GatewayAnswer(200, b"{}")

    async def lookup(self, spec: ToolSpec, **_: Any) -> LookupAnswer:
        self.specs.append(spec)
        return LookupAnswer(())


async def test_the_routing_gateway_sends_mcp_tools_to_mcp_and_the_others_over_http() -> None:
    http, mcp = Recording(), Recording()
    over_http = WRITE.model_copy(update={"server": None, "endpoint": "/tools/act"})
    routing = RoutingGateway(http, mcp)
    for spec in (over_http, WRITE):
        await routing.call(
            spec, {}, effect_key="k", fencing_token=1, tenant="t", run_id="r", tool_call_id="c"
        )
        await routing.lookup(spec, effect_key="k", tenant="t")
    assert (http.specs, mcp.specs) == ([over_http] * 2, [WRITE] * 2)
    with pytest.raises(GatewayError, match="no MCP gateway"):
        await RoutingGateway(http, None).lookup(WRITE, effect_key="k", tenant="t")


# ---- over HTTP (the SDK's Streamable HTTP app, in process) --------------------------------


class Wire(httpx2.AsyncBaseTransport):
    """The ASGI app behind a wire a test can break for tools/call POSTs: ``refuse`` (the POST
    never connects), ``reset`` (the app handles it, the answer is lost), ``answer`` (a status
    and JSON body instead of the app's, once)."""

    def __init__(self, app: Any) -> None:
        self.app = httpx2.ASGITransport(app)
        self.sent: list[httpx2.Request] = []
        self.fault: str | None = None
        self.instead: httpx2.Response | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if b'"tools/call"' not in request.content:
            return await self.app.handle_async_request(request)
        if self.fault == "refuse":
            raise httpx2.ConnectError("connection refused", request=request)
        self.sent.append(request)
        if self.instead is not None:
            instead, self.instead = self.instead, None
            return instead
        response = await self.app.handle_async_request(request)
        if self.fault == "reset":
            raise httpx2.ReadError("connection reset", request=request)
        return response


# What the SDK's server answers a POST of a session it does not know (after a restart).
SESSION_NOT_FOUND = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {"code": -32600, "message": "Session not found"},
}


@asynccontextmanager
async def over_http(fake: FakeServer) -> AsyncIterator[tuple[McpToolGateway, Wire]]:
    app = fake.server.streamable_http_app(json_response=True, stateless_http=True)
    wire = Wire(app)
    server = McpServerSpec(url="http://127.0.0.1:8000/mcp", headers={"Authorization": "FAKE_AUTH"})
    async with (
        fake.server.session_manager.run(),
        httpx2.AsyncClient(transport=wire) as http,
        McpToolGateway({"fake": server}, http) as gateway,
    ):
        yield gateway, wire


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AUTH", "Bearer s3cret")


@pytest.mark.usefixtures("auth")
async def test_over_http_the_effect_key_is_also_the_idempotency_key_header(
    fake: FakeServer,
) -> None:
    async with over_http(fake) as (gateway, wire):
        assert (await call(gateway)).ok
        fake.answers("act_log", result(structuredContent={"ref": "ek-1", "actions": []}))
        await gateway.lookup(WRITE, effect_key="ek-1", tenant="t1")
    posted, looked = wire.sent
    assert posted.headers["idempotency-key"] == "ek-1"
    assert "idempotency-key" not in looked.headers, "a lookup acts on nothing"
    assert posted.headers["authorization"] == "Bearer s3cret", "the server's headers, from env"


@pytest.mark.usefixtures("auth")
async def test_over_http_a_post_that_could_not_connect_is_not_sent_and_a_new_session_follows(
    fake: FakeServer,
) -> None:
    async with over_http(fake) as (gateway, wire):
        wire.fault = "refuse"
        with pytest.raises(NotSent):
            await call(gateway)
        assert fake.calls == []
        wire.fault = None
        assert (await call(gateway)).ok
        assert len(fake.calls) == 1


@pytest.mark.usefixtures("auth")
async def test_over_http_a_requests_own_error_leaves_the_calls_in_flight_alone(
    fake: FakeServer,
) -> None:
    """The SDK's server answers a JSON-RPC error with an HTTP status (400 here): that says
    nothing of the session, which the other calls share."""
    release = anyio.Event()

    async def slow(_: types.CallToolRequestParams) -> types.CallToolResult:
        await release.wait()
        return result(structuredContent={"slow": True})

    fake.handlers["act"] = slow
    fake.answers("peek", MCPError(INVALID_PARAMS, "no such customer"))
    async with over_http(fake) as (gateway, _), anyio.create_task_group() as tg:
        answers: list[GatewayAnswer] = []

        async def in_flight() -> None:
            answers.append(await call(gateway))

        tg.start_soon(in_flight)
        with anyio.fail_after(5):
            while not fake.calls:
                await anyio.sleep(0.01)
        assert (await call(gateway, READ)).status == 422
        release.set()
    assert [a.status for a in answers] == [200]


@pytest.mark.usefixtures("auth")
async def test_over_http_an_answer_lost_after_acting_is_outcome_unknown(fake: FakeServer) -> None:
    async with over_http(fake) as (gateway, wire):
        wire.fault = "reset"
        with pytest.raises(OutcomeUnknown):
            await call(gateway)
        assert len(fake.calls) == 1, "it acted"


@pytest.mark.usefixtures("auth")
@pytest.mark.parametrize(
    ("response", "spec", "expected"),
    [
        (httpx2.Response(429), WRITE, NotSent),
        (httpx2.Response(404, json=SESSION_NOT_FOUND), WRITE, NotSent),
        (httpx2.Response(502), WRITE, OutcomeUnknown),
        (httpx2.Response(502), READ, NotSent),
    ],
    ids=["throttled", "unknown-session", "bad-gateway-write", "bad-gateway-read"],
)
async def test_over_http_a_refusal_before_any_tool_ran_is_not_sent(
    fake: FakeServer, response: httpx2.Response, spec: ToolSpec, expected: type[Exception]
) -> None:
    async with over_http(fake) as (gateway, wire):
        wire.instead = response
        with pytest.raises(expected):
            await call(gateway, spec)
        assert (await call(gateway, spec)).ok, "and the next call goes through"
