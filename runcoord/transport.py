"""The HTTP clients of the executors, on aiohttp, and whether a failed request left.

The executors keep httpx's API (and the openai SDK's httpx2) but send over aiohttp, and they
are mostly requests. Measured on a 2-core machine (``bench/http_clients.py``), a tool call
costs half the CPU over aiohttp (0.85 against 1.65 ms) and an SDK poll a fifth less (1.68
against 2.05 ms).

Whether a request that failed may have acted decides between a retry and a reconcile, so it
is read here, once, for every client. The aiohttp transports (the openai SDK's vendored one
and ``httpx_aiohttp``) map aiohttp's errors to httpx's by class, and every
``aiohttp.ClientConnectionError`` they have no entry for becomes ``ConnectTimeout``: a
connection the server dropped after the request was written (``ServerDisconnectedError``)
would read as "never left". So when an aiohttp error lies underneath, it decides: only a
failure to connect (``ClientConnectorError``, or the connect timeout) means not sent.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import httpx2
from httpx_aiohttp import AiohttpTransport

# Raised by httpx's (and httpx2's) own transport before the request was on the wire.
_HTTPX_NOT_SENT: tuple[type[BaseException], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.PoolTimeout,
)
_AIOHTTP_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def not_sent(exc: BaseException) -> bool:
    """Whether ``exc`` (an httpx or httpx2 error, or one wrapping it) says the request never
    left: only then may it be sent again without asking whether it acted."""
    link: BaseException | None = exc
    httpx_says = False
    while link is not None:
        if isinstance(link, aiohttp.ClientError):
            return isinstance(link, _AIOHTTP_NOT_SENT)
        httpx_says = httpx_says or isinstance(link, _HTTPX_NOT_SENT)
        link = link.__cause__
    return httpx_says


def gateway_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx client sending over aiohttp (the tool gateway's)."""
    return httpx.AsyncClient(transport=AiohttpTransport(), **kwargs)
