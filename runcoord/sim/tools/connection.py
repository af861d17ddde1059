"""Dropping a connection with no answer at all: the `drop_after_act` fault.

ASGI has no message for "close without responding" (an app that returns without a response
gets a 500 from the server), so this wrapper reaches for the server's transport: uvicorn's
`send` is a bound method of its request cycle, which holds it. The handler calls
`await scope[DROP](...)`; the transport is aborted and everything the app sends afterwards is
swallowed. The gateway's tests check that a client sees a connection error, not a status.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DROP = "runcoord.sim.tools.drop_connection"


class DroppableConnections:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        dropped = False

        async def drop() -> None:
            nonlocal dropped
            if transport is None:
                raise RuntimeError("the server does not expose its transport: cannot drop")
            dropped = True
            transport.abort()
            # Let the server see the connection is gone (connection_lost runs on the next
            # loop turns), so it does not try to answer 500 for us.
            for _ in range(10):
                if getattr(cycle, "disconnected", True):
                    break
                await asyncio.sleep(0)

        async def guarded_send(message: Message) -> None:
            if not dropped:
                await send(message)

        await self.app({**scope, DROP: drop}, receive, guarded_send)
