"""Concurrency limits: a permit needs a free slot in its tenant's pool (fairness between
tenants) AND in its tool's pool (protects the tool, across tenants). Backpressure only: a
refusal means "back off and try again", and with Redis down the limiters allow.

ConcurrencyLimiter (tool calls): a partitioned quota, no Redis per call.
    Each live replica of a *fleet* (the limiters sharing one `prefix`) admits calls locally,
    up to its share of each pool: share = max(1, floor(limit / N)), N the fleet's live
    replicas. acquire, renew and release are a few dict operations under a lock. N comes from
    Redis: a heartbeat thread (started by the first acquire) runs one script every
    `heartbeat_s` (2 s) that puts this replica in the fleet's sorted set, scored by its expiry
    (now + `member_ttl_s`, 3 heartbeats, on Redis's own clock), drops the expired members and
    counts the rest. `close()` leaves the fleet at once.

    Guarantee: while N is accurate, the fleet admits at most the sum of the shares, which is
    at most the limit, in every pool (a share is at least 1, so with more replicas than a
    pool's limit the fleet admits up to N). A replica that joins counts itself at once; the
    others see it at their next heartbeat, and nothing already admitted is revoked, so during
    a membership change a pool can run over by at most the shares of the replicas that joined
    within one heartbeat, until the others' calls admitted above their new, smaller share
    finish. A replica that closes leaves at once; one that crashed (or is paused past
    `member_ttl_s`) drops out when its member expires, and then the others' shares grow back
    (until then they are smaller: the safe side). The price of splitting: a replica whose
    share is in use refuses even when another has room, so with load skewed towards one
    replica a pool admits less than its limit.

    Redis down: the heartbeat fails quietly and the last N known is kept, so are the shares.
    Before any heartbeat succeeded the share is max(1, floor(limit * fallback_share)); with N
    replicas the fleet then admits about N * fallback_share * limit, so set fallback_share
    near 1/N. Denying everything would stall runs (G2) for the sake of a component that only
    shapes load, and allowing without limit would let an outage overload the tools. Redis
    back but empty (restarted): the fleet is rebuilt within one heartbeat, and until then a
    replica may count too few others, as during a join.

    Cost: one EVALSHA per replica per heartbeat (6 Redis commands, counting those the script
    runs), none per call. Permits live in this process only: one a holder never releases
    (a cancelled caller) frees itself after `ttl_s`, `renew` keeps it longer, and a crashed
    replica's permits die with it, so there is nothing to free in Redis after a crash.

RedisSlots (the agent API's event streams): exact slots shared by the whole fleet, in Redis
    sorted sets scored by expiry on Redis's clock; one script call per acquire and renew,
    one pipelined round trip per release. For rare, long-lived permits whose refusal a client
    sees, where a partitioned quota would refuse while the fleet has room. With Redis down it
    allows up to max(1, floor(limit * fallback_share)) per pool per process; those permits
    are unknown to Redis when it returns, so for at most `ttl_s` after recovery a pool can run
    over its limit by them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from runcoord.effects.ledger.redis_guard import RedisGuard

log = logging.getLogger(__name__)

# The fleet's heartbeat: join (or stay), drop the expired members, count the live ones.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""

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
    # Granted while Redis could not be reached: by the fallback share (ConcurrencyLimiter:
    # the last heartbeat failed or none has succeeded yet; RedisSlots: the permit is held in
    # this process, not in Redis).
    local: bool


class ConcurrencyLimiter:
    """The partitioned quota described in the module docstring."""

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
        heartbeat_s: float = 2.0,
        member_ttl_s: float | None = None,
    ) -> None:
        self._guard = guard
        self._limits = limits
        self._share = fallback_share
        self._fleet_key = f"{prefix}fleet"
        # Members are named "<holder>/<random>", so a restarted replica can find (and drop)
        # the memberships of its dead incarnations: see reclaim.
        tag = uuid.uuid4().hex[:12]
        self.member = f"{holder}/{tag}" if holder else tag
        self._heartbeat_s = heartbeat_s
        ttl = member_ttl_s if member_ttl_s is not None else 3 * heartbeat_s
        self._member_ttl_ms = max(1, int(ttl * 1000))
        self._beat = guard.client.register_script(_HEARTBEAT)
        self._pools = _LocalPools(clock, ttl_s)
        # N from the last heartbeat that got an answer (None: none has yet), and whether the
        # latest one did.
        self._replicas: int | None = None
        self._fresh = False
        self._lock = threading.Lock()
        self._joined = False
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def replicas(self) -> int | None:
        """The fleet's live replicas as last heard from Redis; None before any answer."""
        return self._replicas

    def share(self, limit: int) -> int:
        """How many permits of a pool of `limit` this replica admits."""
        n = self._replicas
        if n is None:
            return max(1, math.floor(limit * self._share))
        return max(1, limit // n)

    def acquire(self, tenant: str, tool: str) -> Permit | None:
        """A permit, or None when this replica's share of a pool is in use (back off and
        try again)."""
        self.join()
        shares = (self.share(self._limits.per_tenant), self.share(self._limits.tool(tool)))
        permit_id = uuid.uuid4().hex
        if self._pools.acquire((f"tenant:{tenant}", f"tool:{tool}"), shares, permit_id):
            return Permit(tenant, tool, permit_id, local=not self._fresh)
        return None

    def renew(self, permit: Permit) -> bool:
        """Keep the slot for another ttl_s. False: the permit expired (and may be reused)."""
        return self._pools.renew(permit.id)

    def release(self, permit: Permit) -> None:
        self._pools.release(permit.id)

    def reclaim(self, replica: str, holder: str) -> int:
        """Drop the fleet memberships of a restarted replica's earlier incarnations; how many.

        Their holders are dead (a replica's name is unique among live ones), and their
        permits died with them (permits are held in process), but until their members expire
        (member_ttl_s) they would count in N and shrink every replica's share. Memberships of
        ``holder`` itself are kept.
        """

        def drop(r: redis.Redis) -> int:
            members = [str(m) for m in r.zrange(self._fleet_key, 0, -1)]
            ghosts = [
                m for m in members if m.startswith(f"{replica}/") and not m.startswith(f"{holder}/")
            ]
            if ghosts:
                r.zrem(self._fleet_key, *ghosts)
            return len(ghosts)

        return self._guard.call(drop, 0)

    def heartbeat(self) -> int | None:
        """Join (or stay in) the fleet and learn its size, in one round trip: N, or None when
        Redis did not answer (the last N known is kept). Never raises."""
        if self._closed:
            return None
        try:
            n: int | None = self._guard.call(
                lambda r: int(
                    self._beat(
                        keys=[self._fleet_key], args=[self.member, self._member_ttl_ms], client=r
                    )
                ),
                None,
            )
        except Exception:  # the heartbeat must never take its caller down
            log.exception("limiter heartbeat failed")
            n = None
        if n is None:
            self._fresh = False
            return None
        self._replicas = max(1, n)
        self._fresh = True
        return self._replicas

    def close(self) -> None:
        """Stop the heartbeat and leave the fleet, so the others' shares grow at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            joined, self._joined = self._joined, True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._heartbeat_s + 5)
        if joined:
            try:
                self._guard.call(lambda r: r.zrem(self._fleet_key, self.member), None)
            except Exception:  # it expires on its own
                log.exception("limiter: leaving the fleet failed")

    def join(self) -> None:
        """Join the fleet: learn N now (one round trip), then heartbeat in the background.
        Done by the first acquire if not before; an executor joins at start, so that acquire
        and release never wait on Redis and can run on its event loop. The thread holds the
        limiter weakly: a limiter dropped without close() stops heartbeating and its member
        expires."""
        if self._joined:
            return
        with self._lock:
            if self._joined:
                return
            self.heartbeat()
            try:
                thread = threading.Thread(
                    target=_heartbeats,
                    args=(weakref.ref(self), self._stop, self._heartbeat_s),
                    name=f"limiter-heartbeat:{self._fleet_key}",
                    daemon=True,
                )
                thread.start()
                self._thread = thread
            except RuntimeError:  # no thread to be had: admit by the last N known
                log.exception("limiter heartbeat not started")
            self._joined = True


def _heartbeats(
    ref: weakref.ReferenceType[ConcurrencyLimiter], stop: threading.Event, every_s: float
) -> None:
    while not stop.wait(every_s):
        limiter = ref()
        if limiter is None:
            return
        limiter.heartbeat()
        del limiter


class RedisSlots:
    """Exact slots shared by the fleet in Redis, one script call per acquire (see the module
    docstring)."""

    def __init__(
        self,
        guard: RedisGuard,
        limits: Limits,
        *,
        ttl_s: float = 30.0,
        fallback_share: float = 0.25,
        prefix: str = "runcoord:limit:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._guard = guard
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
        permit_id = uuid.uuid4().hex
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
    """Pools with expiry, counted in this process only."""

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
            if not pools or any(self._pools.get(p, {}).get(permit_id, 0.0) <= now for p in pools):
                return False
            for pool in pools:
                self._pools[pool][permit_id] = now + self._ttl_s
            return True

    def release(self, permit_id: str) -> None:
        with self._lock:
            for pool in self._owned.pop(permit_id, ()):
                live = self._pools.get(pool)
                if live is not None:
                    live.pop(permit_id, None)
                    if not live:  # one pool per tenant and tool: keep only those in use
                        del self._pools[pool]
