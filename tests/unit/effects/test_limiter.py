"""The tool-call limiter's partitioned quota without Redis: the shares, the local pools on a
fake clock, and a heartbeat that only ever costs one call per beat and never raises.

The guard is a stand-in that answers the fleet's heartbeat with a replica count it is told
(or fails as an unreachable Redis does); the real heartbeat script, the membership's expiry
and two replicas sharing a pool are in tests/integration/test_limiter.py."""

from __future__ import annotations

import gc
import threading
from typing import Any, cast

import pytest

from runcoord.effects.ledger import RedisGuard
from runcoord.effects.limits import ConcurrencyLimiter, Limits
from runcoord.stack.polling import wait_until
from tests.fake_time import FakeTime


class FleetStub:
    """Stands in for RedisGuard (and its client): a heartbeat answers `replicas`, or nothing
    when it is None (Redis unreachable); `fail` makes a call raise what a bug would."""

    def __init__(self, replicas: int | None = 1) -> None:
        self.replicas = replicas
        self.fail: Exception | None = None
        self.calls = 0
        self.removed: list[str] = []
        self.client = self
        self._lock = threading.Lock()

    def register_script(self, _script: str) -> Any:
        return lambda **_kw: self.replicas

    def zrem(self, _key: str, *members: str) -> int:
        self.removed.extend(members)
        return len(members)

    def call(self, fn: Any, default: Any) -> Any:
        with self._lock:
            self.calls += 1
        if self.fail is not None:
            raise self.fail
        return default if self.replicas is None else fn(self)


def limiter(
    fleet: FleetStub,
    limits: Limits,
    clock: FakeTime | None = None,
    **kw: Any,
) -> ConcurrencyLimiter:
    # A heartbeat an hour apart: the tests beat by hand unless they say otherwise.
    kw.setdefault("heartbeat_s", 3600.0)
    lim = ConcurrencyLimiter(
        cast(RedisGuard, fleet),
        limits,
        clock=clock or FakeTime(),
        prefix="test:limit:",
        **kw,
    )
    return lim


@pytest.fixture
def closing() -> Any:
    opened: list[ConcurrencyLimiter] = []

    def track(lim: ConcurrencyLimiter) -> ConcurrencyLimiter:
        opened.append(lim)
        return lim

    yield track
    for lim in opened:
        lim.close()


@pytest.mark.parametrize(
    ("limit", "replicas", "share"),
    [(32, 1, 32), (32, 2, 16), (32, 3, 10), (8, 3, 2), (5, 2, 2), (2, 3, 1), (1, 4, 1)],
)
def test_a_share_is_the_floor_of_the_limit_over_the_replicas_and_at_least_one(
    limit: int, replicas: int, share: int
) -> None:
    lim = limiter(FleetStub(replicas), Limits())
    assert lim.heartbeat() == replicas
    assert lim.share(limit) == share
    if limit >= replicas:
        assert share * replicas <= limit, "the fleet's shares never add up past the limit"


def test_before_any_heartbeat_answered_the_share_is_the_fallback() -> None:
    lim = limiter(FleetStub(None), Limits(), fallback_share=0.25)
    assert lim.heartbeat() is None and lim.replicas is None
    assert [lim.share(n) for n in (32, 8, 3, 1)] == [8, 2, 1, 1]


def test_each_replica_admits_its_share_of_the_tenant_pool_locally(closing: Any) -> None:
    lim = closing(limiter(FleetStub(2), Limits(per_tenant=8, default_per_tool=100)))
    held = [lim.acquire("t1", tool) for tool in ("create_ticket", "send_email") * 2]
    assert all(p is not None and not p.local for p in held), "floor(8 / 2) = 4"
    assert lim.acquire("t1", "post_note") is None, "the tenant pool is shared by its tools"
    assert lim.acquire("t2", "post_note") is not None, "another tenant is not held back"
    first = held[0]
    assert first is not None
    lim.release(first)
    assert lim.acquire("t1", "post_note") is not None


def test_the_tool_pool_protects_the_tool_across_tenants(closing: Any) -> None:
    lim = closing(limiter(FleetStub(2), Limits(per_tenant=10, per_tool={"charge_card": 3})))
    held = lim.acquire("t1", "charge_card")
    assert held is not None, "floor(3 / 2) = 1"
    assert lim.acquire("t2", "charge_card") is None
    assert lim.acquire("t2", "search_kb") is not None
    lim.release(held)
    assert lim.acquire("t2", "charge_card") is not None


def test_no_redis_call_per_acquire_or_release(closing: Any) -> None:
    fleet = FleetStub(1)
    lim = closing(limiter(fleet, Limits(per_tenant=4)))
    for _ in range(100):
        permit = lim.acquire("t1", "send_email")
        assert permit is not None
        assert lim.renew(permit)
        lim.release(permit)
    assert fleet.calls == 1, "one heartbeat, on the first acquire; nothing per call"


def test_a_permit_never_released_frees_its_slot_after_the_ttl(closing: Any) -> None:
    clock = FakeTime(100.0)
    lim = closing(limiter(FleetStub(1), Limits(per_tenant=1), clock, ttl_s=30.0))
    lost = lim.acquire("t1", "post_note")  # its holder was cancelled and never releases
    assert lost is not None
    clock.now += 29.9
    assert lim.acquire("t1", "post_note") is None
    clock.now += 0.1
    again = lim.acquire("t1", "post_note")
    assert again is not None
    assert not lim.renew(lost), "expired, and its slot reused"
    lim.release(lost)  # harmless
    assert lim.acquire("t1", "post_note") is None, "the release of a stale permit freed nothing"


def test_renew_keeps_the_slot_for_another_ttl(closing: Any) -> None:
    clock = FakeTime(0.0)
    lim = closing(limiter(FleetStub(1), Limits(per_tenant=1), clock, ttl_s=10.0))
    permit = lim.acquire("t1", "send_email")
    assert permit is not None
    clock.now += 9.0
    assert lim.renew(permit)
    clock.now += 9.0
    assert lim.acquire("t1", "send_email") is None, "renewed at 9 s: live until 19 s"
    lim.release(permit)
    assert not lim.renew(permit), "released"
    assert lim.acquire("t1", "send_email") is not None


def test_shares_follow_the_fleet_and_nothing_admitted_is_revoked(closing: Any) -> None:
    fleet = FleetStub(1)
    lim = closing(limiter(fleet, Limits(per_tenant=6)))
    held = [lim.acquire("t1", "x") for _ in range(4)]
    assert all(held) and lim.share(6) == 6

    fleet.replicas = 3  # two replicas joined
    assert lim.heartbeat() == 3 and lim.share(6) == 2
    assert lim.acquire("t1", "x") is None, "4 held, above the new share of 2"
    for permit in held[:3]:
        assert permit is not None
        lim.release(permit)
    assert lim.acquire("t1", "x") is not None, "1 held: room for 1 more"
    assert lim.acquire("t1", "x") is None

    fleet.replicas = 1  # they left (or crashed and their members expired)
    assert lim.heartbeat() == 1
    assert lim.acquire("t1", "x") is not None, "the share grew back"


def test_with_redis_down_the_last_fleet_size_known_is_kept(closing: Any) -> None:
    fleet = FleetStub(2)
    lim = closing(limiter(fleet, Limits(per_tenant=8)))
    assert lim.acquire("t1", "x") is not None
    fleet.replicas = None  # Redis goes away
    assert lim.heartbeat() is None
    assert lim.replicas == 2 and lim.share(8) == 4
    later = [lim.acquire("t1", "x") for _ in range(4)]
    assert [p is not None and p.local for p in later] == [True, True, True, False]
    fleet.replicas = 2
    assert lim.heartbeat() == 2
    assert lim.acquire("t1", "y") is None, "still 4 held"


def test_with_redis_down_from_the_start_it_allows_the_fallback_share(closing: Any) -> None:
    fleet = FleetStub(None)
    lim = closing(limiter(fleet, Limits(per_tenant=8, default_per_tool=100)))
    local = [lim.acquire("t1", "x") for _ in range(3)]
    assert [p is not None and p.local for p in local] == [True, True, False], "floor(8 * .25)"
    fleet.replicas = 1
    lim.heartbeat()
    back = lim.acquire("t1", "x")
    assert back is not None and not back.local, "a fleet of 1 once Redis answers"


def test_a_failing_heartbeat_never_raises_into_the_caller(closing: Any) -> None:
    fleet = FleetStub(2)
    lim = closing(limiter(fleet, Limits(per_tenant=8)))
    assert lim.heartbeat() == 2
    fleet.fail = RuntimeError("a bug in the script call")
    assert lim.heartbeat() is None
    assert lim.replicas == 2
    assert lim.acquire("t1", "x") is not None


def test_a_limiter_whose_first_heartbeat_raises_still_admits(closing: Any) -> None:
    fleet = FleetStub(2)
    fleet.fail = RuntimeError("boom")
    lim = closing(limiter(fleet, Limits(per_tenant=8), fallback_share=0.5))
    assert [lim.acquire("t1", "x") is not None for _ in range(5)] == [True] * 4 + [False]


def _heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "limiter-heartbeat:test:limit:fleet"]


def test_the_heartbeat_runs_in_the_background_and_close_stops_it() -> None:
    assert not _heartbeat_threads()
    fleet = FleetStub(1)
    lim = limiter(fleet, Limits(per_tenant=8), heartbeat_s=0.01)
    assert fleet.calls == 0, "nothing before the first acquire"
    assert lim.acquire("t1", "x") is not None
    assert lim.replicas == 1, "the first acquire learned the fleet's size"
    wait_until(
        lambda: None if fleet.calls >= 5 else f"{fleet.calls} calls",
        timeout=10,
        what="background heartbeats",
    )
    fleet.replicas = 4
    wait_until(
        lambda: None if lim.replicas == 4 else f"N = {lim.replicas}",
        timeout=10,
        what="a new fleet size",
    )
    lim.close()
    assert not _heartbeat_threads()
    assert fleet.removed == [lim.member], "it left the fleet"
    calls = fleet.calls
    assert lim.heartbeat() is None and fleet.calls == calls, "closed: no more heartbeats"
    assert lim.acquire("t1", "x") is not None, "a closed limiter still admits its share"
    assert not _heartbeat_threads() and fleet.calls == calls
    lim.close()  # twice is harmless


def test_a_limiter_dropped_without_close_stops_heartbeating() -> None:
    fleet = FleetStub(1)
    lim = limiter(fleet, Limits(per_tenant=8), heartbeat_s=0.01)
    assert lim.acquire("t1", "x") is not None
    assert _heartbeat_threads()
    del lim
    gc.collect()
    wait_until(
        lambda: None if not _heartbeat_threads() else "still beating",
        timeout=10,
        what="the heartbeat of a dropped limiter to stop",
    )


def test_a_member_is_named_after_its_holder() -> None:
    holder = "g/tools-0/123/456"
    a, b = (limiter(FleetStub(1), Limits(), holder=holder) for _ in range(2))
    assert a.member.startswith(f"{holder}/") and b.member.startswith(f"{holder}/")
    assert a.member != b.member, "two limiters of one holder are two members"
    assert "/" not in limiter(FleetStub(1), Limits()).member
