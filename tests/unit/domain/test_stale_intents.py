"""Which intents an executor may skip when it picks them up late."""

from __future__ import annotations

from runcoord.domain import intents as it

COMMON = {
    "effect_key": "ek1_x",
    "run_id": "r1",
    "tenant": "t1",
    "thread_id": "th",
    "provider": "assistants",
}
WATCH = it.ObserveRunIntent(
    **COMMON,
    watch=3,
    provider_run_id="run_1",
    since_status="queued",
    since_step=None,
    timeout_ms=20_000,
)


def test_a_watch_goes_stale_at_its_own_timeout() -> None:
    assert not it.stale(WATCH, issued_at_ms=1_000, now_ms=20_999)
    assert it.stale(WATCH, issued_at_ms=1_000, now_ms=21_000)


def test_a_watch_without_a_timestamp_is_run() -> None:
    assert not it.stale(WATCH, issued_at_ms=None, now_ms=10**12)


def test_no_other_intent_goes_stale() -> None:
    create = it.CreateRunIntent(**COMMON, assistant_id="asst", input="hi", metadata={})
    cancel = it.CancelRunIntent(**COMMON, provider_run_id="run_1", reason="budget")
    for intent in (create, cancel):
        assert not it.stale(intent, issued_at_ms=0, now_ms=10**12)
