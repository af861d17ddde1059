"""Per-request plumbing: an ``x-request-id`` on every answer, and losing marked answers.

A handler whose fault gate drew "lost" has already applied its change; here its answer is
replaced by a 500, or the connection is closed after the status line so that the client sees
a broken response (``lost_mode: drop``). Either way the client cannot tell what happened.
"""

from __future__ import annotations

import json
import logging
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runcoord.sim.provider.errors import server_error
from runcoord.sim.provider.faults import LOST_STATE_KEY
from runcoord.sim.provider.state import sim_of


class ConnectionDropped(Exception):
    """Raised mid-response on purpose: the server closes the connection without an answer."""


class _HideDroppedConnections(logging.Filter):
    # uvicorn logs every exception escaping the app; ours are the fault, not a bug.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def quiet_dropped_connections() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


class SimMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = f"req_{uuid.uuid4().hex}".encode()

        async def send_wrapper(message: Message) -> None:
            lost = state.get(LOST_STATE_KEY)
            if message["type"] == "http.response.start":
                if lost == "drop":
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", b"4096"),
                                (b"x-request-id", request_id),
                            ],
                        }
                    )
                    raise ConnectionDropped("lost response (drop)")
                if lost == "500":
                    body = json.dumps(server_error().body()).encode()
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id),
                    ]
                    await send({"type": "http.response.start", "status": 500, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
                MutableHeaders(scope=message).append("x-request-id", request_id.decode())
            elif message["type"] == "http.response.body" and lost == "500":
                return  # the real answer is swallowed; the 500 was sent in its place
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # Counted once routed (the router names the route in the scope), answered or
            # not. The route's path is the one of the /v1 router it sits in (no prefix).
            route = getattr(scope.get("route"), "path", None)
            if route is not None and scope["path"].startswith("/v1/"):
                route = route if route.startswith("/v1/") else f"/v1{route}"
                sim_of(HTTPConnection(scope)).records.requests[f"{scope['method']} {route}"] += 1
