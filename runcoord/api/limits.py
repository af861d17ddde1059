"""The agent API's own limits: request bodies (before anything parses them), requests per
tenant (a token bucket) and open event streams per tenant.

The two per-tenant limits live in Redis so every API replica counts against the same budget;
they only shape load, so with Redis down they allow (DESIGN.md, "Redis, and why correctness
never rests on it": the system slows, it does not duplicate) and never refuse a read for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from runcoord.effects.ledger.redis_guard import RedisGuard
from runcoord.effects.limits.limiter import Limits, Permit, RedisSlots

KiB = 1024

# A turn's body: the largest turn the request model admits (32,000 characters of input, 14
# metadata pairs of 64 + 512 characters, a 128-character assistant id) JSON-escaped at its
# worst (a four-byte character as two \uXXXX escapes: 12 bytes) is about 482 kB.
MAX_BODY_BYTES = 512 * KiB
# A provider webhook: OpenAI's events are thin (type, ids, a timestamp; `data` holds the object's
# id, never the object), a few hundred bytes. The route is unauthenticated until the signature
# is checked, so it gets far less than a turn: still a hundred times what an event takes.
MAX_WEBHOOK_BODY_BYTES = 64 * KiB


class BodyLimit:
    """ASGI middleware: refuse (413) a request body over its route's limit before the app
    reads any of it. A Content-Length over the limit is refused without reading the body; a
    body of unknown length (chunked) is read here, counted as it arrives, refused as soon as
    it passes the limit, and otherwise handed on whole."""

    def __init__(self, app: Any, *, default: int, per_path: Mapping[str, int]) -> None:
        self.app = app
        self.default = default
        self.per_path = dict(per_path)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default)
        headers = {k.lower(): v for k, v in scope["headers"]}
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: dict[str, Any] | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Any:
            nonlocal body
            if body is not None:
                first, body = body, None
                return first
            return await receive()  # http.disconnect, for streaming responses

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    detail = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(detail)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": detail})


# KEYS[1]: the tenant's bucket. ARGV: tokens per second, bucket size. Returns {1, 0} when a
# token was taken, else {0, milliseconds until one is there}. Redis's clock, so replicas agree.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return {allowed, wait}
"""


class RateLimiter:
    """A token bucket per tenant: ``rate_per_s`` tokens a second, at most ``burst`` saved up;
    a request takes one. A rate of 0 (or less) turns the limit off."""

    def __init__(
        self,
        guard: RedisGuard,
        rate_per_s: float,
        burst: int,
        *,
        prefix: str = "runcoord:api:rate:",
    ) -> None:
        self._guard = guard
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._prefix = prefix
        self._take = guard.client.register_script(_TAKE)

    def wait_s(self, tenant: str) -> float | None:
        """None: go ahead (a token was taken, or Redis cannot say); else the seconds until the
        tenant's next token."""
        if self.rate_per_s <= 0:
            return None
        answer = self._guard.call(
            lambda r: self._take(
                keys=[f"{self._prefix}{tenant}"], args=[self.rate_per_s, self.burst], client=r
            ),
            None,
        )
        if answer is None or int(answer[0]) == 1:
            return None
        return max(0.001, int(answer[1]) / 1000)


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait_s)))


class StreamSlots:
    """At most ``per_tenant`` open event streams per tenant, across replicas (Redis sorted
    sets whose members expire, see RedisSlots): a stream renews its slot while it
    runs and frees it when it ends; a replica that dies leaves slots that expire after
    ``ttl_s``. With Redis down each replica allows every tenant ``per_tenant`` on its own."""

    POOL = "events"  # the limiter's second pool: every tenant's streams, uncapped here

    def __init__(self, guard: RedisGuard, per_tenant: int, *, ttl_s: float) -> None:
        # Exact slots, not the tool limiter's per-replica shares: a stream is long and rare,
        # so a Redis round trip per stream costs nothing, and a tenant's cap must not depend
        # on how many API replicas run.
        self._limiter = RedisSlots(
            guard,
            Limits(per_tenant=per_tenant, default_per_tool=2**31 - 1),
            ttl_s=ttl_s,
            fallback_share=1.0,
            prefix="runcoord:api:streams:",
        )

    def acquire(self, tenant: str) -> Permit | None:
        return self._limiter.acquire(tenant, self.POOL)

    def renew(self, permit: Permit) -> None:
        self._limiter.renew(permit)  # an expired slot is not a reason to end a stream

    def release(self, permit: Permit) -> None:
        self._limiter.release(permit)
