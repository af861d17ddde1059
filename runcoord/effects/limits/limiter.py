"""A concurrency limiter for tool calls: a permit needs a free slot in its tenant's pool
(fairness between tenants) AND in its tool's pool (protects the tool, across tenants).

Slots live in Redis sorted sets scored by expiry, judged by Redis's clock (TIME inside the
scripts), so a holder that crashes frees its slot after `ttl_s` instead of leaking it; a long
call keeps its slot with `renew`.

When Redis is unavailable the limiter ALLOWS, with a process-local limit of
max(1, floor(limit * fallback_share)) per pool. Denying everything would stall runs (G2) for
the sake of a component that only shapes load, and allowing without limit would let an outage
overload the tools. With N replicas the fleet admits about N * fallback_share * limit, so set
fallback_share near 1/N. Permits granted locally are not known to Redis when it returns, so
for at most `ttl_s` after recovery a pool can run over its limit by the local grants.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from runcoord.effects.ledger.redis_guard import RedisGuard

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 0
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 1, 2 do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if (not score) or tonumber(score) <= now then return 0 end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 1
"""


@dataclass(frozen=True)
class Limits:
    per_tenant: int = 32
    default_per_tool: int = 64
    per_tool: Mapping[str, int] = field(default_factory=dict)

    def tool(self, tool: str) -> int:
        return self.per_tool.get(tool, self.default_per_tool)


@dataclass(frozen=True)
class Permit:
    tenant: str
    tool: str
    id: str
    # Granted by the process-local fallback while Redis was unavailable.
    local: bool


class ConcurrencyLimiter:
    def __init__(
        self,
        guard: RedisGuard,
        limits: Limits,
        *,
        ttl_s: float = 30.0,
        fallback_share: float = 0.25,
        prefix: str = "runcoord:limit:",
        clock: Callable[[], float] = time.monotonic,
        holder: str = "",
    ) -> None:
        self._guard = guard
        # Permit ids start with "<holder>/", so a restarted replica can find (and free) the
        # slots its dead incarnations held: see reclaim.
        self._holder = holder
        self._limits = limits
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._share = fallback_share
        self._prefix = prefix
        self._acquire = guard.client.register_script(_ACQUIRE)
        self._renew = guard.client.register_script(_RENEW)
        self._local = _LocalPools(clock, ttl_s)

    def pool_keys(self, tenant: str, tool: str) -> tuple[str, str]:
        return f"{self._prefix}tenant:{tenant}", f"{self._prefix}tool:{tool}"

    def acquire(self, tenant: str, tool: str) -> Permit | None:
        """A permit, or None when a pool is full (back off and try again)."""
        permit_id = f"{self._holder}/{uuid.uuid4().hex}" if self._holder else uuid.uuid4().hex
        limits = (self._limits.per_tenant, self._limits.tool(tool))
        verdict = self._guard.call(
            lambda r: int(
                self._acquire(
                    keys=list(self.pool_keys(tenant, tool)),
                    args=[permit_id, self._ttl_ms, *limits],
                    client=r,
                )
            ),
            None,
        )
        if verdict is not None:
            return Permit(tenant, tool, permit_id, local=False) if verdict == 0 else None
        local_limits = tuple(max(1, math.floor(n * self._share)) for n in limits)
        pools = (f"tenant:{tenant}", f"tool:{tool}")
        if self._local.acquire(pools, local_limits, permit_id):
            return Permit(tenant, tool, permit_id, local=True)
        return None

    def reclaim(self, replica: str, holder: str) -> int:
        """Free the slots of a restarted replica's earlier incarnations; how many permits.

        Their holders are dead (a replica's name is unique among live ones), so their slots
        would only block the pools until they expire (ttl_s): a restarted replica would find
        its tenants' pools full of its own ghosts. Slots of ``holder`` itself are kept.
        """

        def free(r: redis.Redis) -> int:
            freed: set[str] = set()  # a permit holds a slot in its tenant's and tool's pool
            for pool in r.scan_iter(match=f"{self._prefix}*", count=1000):
                members = [str(m) for m in r.zrange(pool, 0, -1)]
                ghosts = [
                    m
                    for m in members
                    if m.startswith(f"{replica}/") and not m.startswith(f"{holder}/")
                ]
                if ghosts:
                    r.zrem(pool, *ghosts)
                    freed.update(ghosts)
            return len(freed)

        return self._guard.call(free, 0)

    def renew(self, permit: Permit) -> bool:
        """Keep the slot for another ttl_s. False: the permit expired (and may be reused)."""
        if permit.local:
            return self._local.renew(permit.id)
        renewed = self._guard.call(
            lambda r: int(
                self._renew(
                    keys=list(self.pool_keys(permit.tenant, permit.tool)),
                    args=[permit.id, self._ttl_ms],
                    client=r,
                )
            ),
            None,
        )
        # Redis down: the slot cannot be checked; the caller may go on, as acquire would allow.
        return renewed != 0

    def release(self, permit: Permit) -> None:
        if permit.local:
            self._local.release(permit.id)
            return

        def rem(r: redis.Redis) -> None:
            tenant_key, tool_key = self.pool_keys(permit.tenant, permit.tool)
            pipe = r.pipeline(transaction=False)
            pipe.zrem(tenant_key, permit.id)
            pipe.zrem(tool_key, permit.id)
            pipe.execute()

        # If Redis is down the slot frees itself when it expires.
        self._guard.call(rem, None)


class _LocalPools:
    """The fallback: the same pools with expiry, counted in this process only."""

    def __init__(self, clock: Callable[[], float], ttl_s: float) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._pools: dict[str, dict[str, float]] = {}
        self._owned: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def acquire(self, pools: tuple[str, ...], limits: tuple[int, ...], permit_id: str) -> bool:
        with self._lock:
            now = self._clock()
            members = []
            for pool, limit in zip(pools, limits, strict=True):
                live = {}
                for p, until in self._pools.get(pool, {}).items():
                    if until > now:
                        live[p] = until
                    else:  # expired: its holder never released it
                        self._owned.pop(p, None)
                self._pools[pool] = live
                if len(live) >= limit:
                    return False
                members.append(live)
            for live in members:
                live[permit_id] = now + self._ttl_s
            self._owned[permit_id] = pools
            return True

    def renew(self, permit_id: str) -> bool:
        with self._lock:
            now = self._clock()
            pools = self._owned.get(permit_id, ())
            if not pools or any(self._pools[p].get(permit_id, 0.0) <= now for p in pools):
                return False
            for pool in pools:
                self._pools[pool][permit_id] = now + self._ttl_s
            return True

    def release(self, permit_id: str) -> None:
        with self._lock:
            for pool in self._owned.pop(permit_id, ()):
                self._pools[pool].pop(permit_id, None)
