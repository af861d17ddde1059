"""Redis as a fast path only: every call goes through a guard that turns an outage into "no
answer" instead of an error, so correctness never rests on Redis (DESIGN.md, "Redis, and why
correctness never rests on it": with Redis down the system slows, it does not duplicate)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

T = TypeVar("T")

log = logging.getLogger(__name__)


def connect_redis(url: str, *, timeout_s: float = 0.25) -> redis.Redis:
    """A client that fails fast: short socket timeouts and no retries of its own, because the
    caller always has a slower correct path to fall back on."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class RedisGuard:
    """Runs Redis calls; on a Redis error logs it, returns the caller's default and skips Redis
    for `cooldown_s`, so an outage costs one timeout per cooldown rather than one per call."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._closed_until = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """False while the breaker is open (a recent call failed)."""
        return self._clock() >= self._closed_until

    def call(self, fn: Callable[[redis.Redis], T], default: T) -> T:
        if not self.available:
            return default
        try:
            return fn(self.client)
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                if self.available:
                    log.warning(
                        "redis unavailable, using the fallback for %ss: %s", self._cooldown_s, exc
                    )
                self._closed_until = self._clock() + self._cooldown_s
            return default
