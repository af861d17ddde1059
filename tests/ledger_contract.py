"""The effect ledger's contract: one suite every adapter passes.

Test modules subclass `LedgerContract` and provide a `harness` fixture (memory in tests/unit,
PostgreSQL and the Redis-cached PostgreSQL in tests/integration).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runcoord.effects.ledger import (
    Acquired,
    Busy,
    EffectMeta,
    EffectState,
    Finished,
    Ledger,
    RequestConflict,
    request_hash,
)

T = TypeVar("T")

LEASE_S = 60.0  # long: in these tests a lease lapses only when the harness expires it
FINAL = [EffectState.SUCCEEDED, EffectState.FAILED, EffectState.UNKNOWN]


class LedgerHarness(Protocol):
    ledger: Ledger

    def new_ledger(self) -> Ledger:
        """Another client of the same store, as a second executor would have."""
        ...

    def expire(self, key: str) -> None:
        """Make the key's lease lapse now, as if its holder had stalled past it."""
        ...


def meta(request: Any = "req", run_id: str = "run-1") -> EffectMeta:
    return EffectMeta(
        kind="tool:create_ticket",
        tenant="t1",
        run_id=run_id,
        step_id="step-1",
        tool_call_id="call-1",
        request_hash=request_hash(request),
    )


def new_key() -> str:
    return f"eff-{uuid.uuid4().hex}"


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) on n threads released together; return results in index order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return results


class LedgerContract:
    # Subclasses for slow stores lower this.
    machine_settings: ClassVar[settings] = settings(
        max_examples=150,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

    # ---- claim -------------------------------------------------------------------------

    def test_first_claim_acquires_token_one(self, harness: LedgerHarness) -> None:
        key = new_key()
        claim = harness.ledger.claim(key, meta(), "a", LEASE_S)
        assert claim == Acquired(key=key, token=1, attempt=1, previous_sent=False)
        record = harness.ledger.get(key)
        assert record is not None
        assert record.state is EffectState.CLAIMED
        assert (record.fencing_token, record.attempts, record.lease_owner) == (1, 1, "a")
        assert record.meta == meta()
        assert record.sent_at is None and record.completed_at is None

    def test_a_first_claim_sending_at_once_is_on_record_as_sent(
        self, harness: LedgerHarness
    ) -> None:
        key = new_key()
        claim = harness.ledger.claim(key, meta(), "a", LEASE_S, sending=True)
        assert claim == Acquired(key, 1, 1, previous_sent=False, marked_sent=True)
        record = harness.ledger.get(key)
        assert record is not None and record.sent_at is not None
        # Whoever takes it over must not assume nothing was sent; and a take-over is never
        # marked by its claim: it reads what came before first.
        harness.expire(key)
        second = harness.ledger.claim(key, meta(), "b", LEASE_S, sending=True)
        assert second == Acquired(key, 2, 2, previous_sent=True, marked_sent=False)
        harness.expire(key)
        unsent = new_key()
        harness.ledger.claim(unsent, meta(), "a", LEASE_S)
        harness.expire(unsent)
        third = harness.ledger.claim(unsent, meta(), "b", LEASE_S, sending=True)
        assert third == Acquired(unsent, 2, 2, previous_sent=False, marked_sent=False)
        after = harness.ledger.get(unsent)
        assert after is not None and after.sent_at is None

    def test_claim_during_a_live_lease_is_busy_even_for_the_same_owner(
        self, harness: LedgerHarness
    ) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        for owner in ("b", "a"):
            claim = harness.ledger.claim(key, meta(), owner, LEASE_S)
            assert isinstance(claim, Busy)
            assert claim.owner == "a"
            assert 0 < claim.retry_after_s <= LEASE_S

    def test_duplicate_after_completion_returns_the_stored_outcome(
        self, harness: LedgerHarness
    ) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        assert harness.ledger.complete(key, 1, EffectState.SUCCEEDED, {"ticket": "T-1"})
        for owner in ("b", "a", "b"):
            claim = harness.ledger.claim(key, meta(), owner, LEASE_S)
            assert claim == Finished(key, EffectState.SUCCEEDED, {"ticket": "T-1"}, None)

    def test_same_key_with_another_request_is_a_conflict(self, harness: LedgerHarness) -> None:
        key = new_key()
        harness.ledger.claim(key, meta("one"), "a", LEASE_S)
        with pytest.raises(RequestConflict):
            harness.ledger.claim(key, meta("two"), "b", LEASE_S)
        harness.ledger.complete(key, 1, EffectState.FAILED, None, "boom")
        with pytest.raises(RequestConflict):
            harness.ledger.claim(key, meta("two"), "b", LEASE_S)
        assert isinstance(harness.ledger.claim(key, meta("one"), "b", LEASE_S), Finished)

    # ---- take-over and fencing ---------------------------------------------------------

    def test_take_over_of_an_unsent_attempt(self, harness: LedgerHarness) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        harness.expire(key)
        claim = harness.ledger.claim(key, meta(), "b", LEASE_S)
        assert claim == Acquired(key=key, token=2, attempt=2, previous_sent=False)
        record = harness.ledger.get(key)
        assert record is not None and record.lease_owner == "b"

    def test_take_over_after_sent_reports_previous_sent_until_completed(
        self, harness: LedgerHarness
    ) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        assert harness.ledger.mark_sent(key, 1)
        harness.expire(key)
        second = harness.ledger.claim(key, meta(), "b", LEASE_S)
        assert second == Acquired(key=key, token=2, attempt=2, previous_sent=True)
        # b stalls before sending; c still must not assume nothing happened: a's send may have.
        harness.expire(key)
        third = harness.ledger.claim(key, meta(), "c", LEASE_S)
        assert third == Acquired(key=key, token=3, attempt=3, previous_sent=True)
        assert harness.ledger.complete(key, 3, EffectState.UNKNOWN, None, "may have acted")
        assert harness.ledger.claim(key, meta(), "d", LEASE_S) == Finished(
            key, EffectState.UNKNOWN, None, "may have acted"
        )

    def test_a_stale_token_is_fenced_and_the_stored_outcome_wins(
        self, harness: LedgerHarness
    ) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        harness.expire(key)
        harness.ledger.claim(key, meta(), "b", LEASE_S)
        assert not harness.ledger.mark_sent(key, 1)
        assert not harness.ledger.renew(key, 1, LEASE_S)
        assert not harness.ledger.release(key, 1)
        assert not harness.ledger.complete(key, 1, EffectState.SUCCEEDED, {"by": "a"})
        assert harness.ledger.complete(key, 2, EffectState.SUCCEEDED, {"by": "b"})
        assert not harness.ledger.complete(key, 1, EffectState.SUCCEEDED, {"by": "a"})
        record = harness.ledger.get(key)
        assert record is not None
        assert (record.state, record.result, record.fencing_token) == (
            EffectState.SUCCEEDED,
            {"by": "b"},
            2,
        )

    def test_mark_sent_needs_a_live_lease_and_renew_revives_it_if_nobody_took_over(
        self, harness: LedgerHarness
    ) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        harness.expire(key)
        assert not harness.ledger.mark_sent(key, 1)
        assert harness.ledger.renew(key, 1, LEASE_S)
        assert harness.ledger.mark_sent(key, 1)
        assert harness.ledger.mark_sent(key, 1), "mark_sent is idempotent"
        assert isinstance(harness.ledger.claim(key, meta(), "b", LEASE_S), Busy)

    def test_release_lets_the_next_claim_take_over_at_once(self, harness: LedgerHarness) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        assert harness.ledger.release(key, 1)
        claim = harness.ledger.claim(key, meta(), "b", LEASE_S)
        assert claim == Acquired(key=key, token=2, attempt=2, previous_sent=False)

    def test_reclaim_lapses_only_the_leases_of_a_replicas_earlier_incarnations(
        self, harness: LedgerHarness
    ) -> None:
        replica = f"group/tools-{uuid.uuid4().hex[:8]}"
        dead, alive = f"{replica}/100/1", f"{replica}/200/2"  # the replica, before and now
        sent, unsent, mine, others, alike, done = (new_key() for _ in range(6))
        harness.ledger.claim(sent, meta(), dead, LEASE_S)
        assert harness.ledger.mark_sent(sent, 1)
        harness.ledger.claim(unsent, meta(), dead, LEASE_S)
        harness.ledger.claim(mine, meta(), alive, LEASE_S)
        harness.ledger.claim(others, meta(), "group/tools-other/100/1", LEASE_S)
        harness.ledger.claim(alike, meta(), f"{replica}0/100/1", LEASE_S)  # a longer name
        harness.ledger.claim(done, meta(), dead, LEASE_S)
        assert harness.ledger.complete(done, 1, EffectState.SUCCEEDED, {"ok": True})

        assert sorted(harness.ledger.reclaim(replica, alive)) == sorted([sent, unsent])
        assert harness.ledger.reclaim(replica, alive) == [], "nothing live is left to lapse"
        # The dead incarnation is fenced; the restarted one takes over at once, and knows
        # whether its predecessor may have acted.
        assert not harness.ledger.mark_sent(sent, 1)
        assert harness.ledger.claim(sent, meta(), alive, LEASE_S) == Acquired(
            key=sent, token=2, attempt=2, previous_sent=True
        )
        assert harness.ledger.claim(unsent, meta(), alive, LEASE_S) == Acquired(
            key=unsent, token=2, attempt=2, previous_sent=False
        )
        for key in (mine, others, alike):
            assert isinstance(harness.ledger.claim(key, meta(), "z", LEASE_S), Busy), key
        assert isinstance(harness.ledger.claim(done, meta(), "z", LEASE_S), Finished)

    # ---- complete ----------------------------------------------------------------------

    def test_complete_is_idempotent_for_the_same_outcome_only(self, harness: LedgerHarness) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        assert harness.ledger.complete(key, 1, EffectState.SUCCEEDED, {"n": 1})
        assert harness.ledger.complete(key, 1, EffectState.SUCCEEDED, {"n": 1})
        assert not harness.ledger.complete(key, 1, EffectState.SUCCEEDED, {"n": 2})
        assert not harness.ledger.complete(key, 1, EffectState.FAILED, {"n": 1})
        assert not harness.ledger.mark_sent(key, 1)
        assert not harness.ledger.renew(key, 1, LEASE_S)

    def test_complete_needs_a_final_state(self, harness: LedgerHarness) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        with pytest.raises(ValueError):
            harness.ledger.complete(key, 1, EffectState.CLAIMED)

    def test_results_are_stored_as_json(self, harness: LedgerHarness) -> None:
        key = new_key()
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        result = {"ids": (1, 2), "nested": {"ok": True, "x": 1.5, "s": "é"}}
        assert harness.ledger.complete(key, 1, EffectState.SUCCEEDED, result)
        expected = {"ids": [1, 2], "nested": {"ok": True, "x": 1.5, "s": "é"}}
        record = harness.ledger.get(key)
        assert record is not None and record.result == expected
        # A caller mutating what it got back changes nothing stored.
        assert isinstance(record.result, dict)
        record.result["ids"] = []
        again = harness.ledger.get(key)
        assert again is not None and again.result == expected
        claim = harness.ledger.claim(key, meta(), "b", LEASE_S)
        assert isinstance(claim, Finished) and claim.result == expected

    def test_get_of_an_unknown_key_is_none(self, harness: LedgerHarness) -> None:
        assert harness.ledger.get(new_key()) is None

    def test_a_lease_must_have_a_length(self, harness: LedgerHarness) -> None:
        key = new_key()
        with pytest.raises(ValueError):
            harness.ledger.claim(key, meta(), "a", 0)
        harness.ledger.claim(key, meta(), "a", LEASE_S)
        with pytest.raises(ValueError):
            harness.ledger.renew(key, 1, -1)

    # ---- real concurrency --------------------------------------------------------------

    def test_concurrent_first_claims_acquire_exactly_once(self, harness: LedgerHarness) -> None:
        clients = [harness.new_ledger() for _ in range(6)]
        for _ in range(5):
            key = new_key()
            claims = race(6, lambda i, key=key: clients[i].claim(key, meta(), f"o{i}", LEASE_S))
            acquired = [c for c in claims if isinstance(c, Acquired)]
            assert len(acquired) == 1, claims
            assert acquired[0].token == 1
            assert all(isinstance(c, Busy) for c in claims if c is not acquired[0])

    def test_concurrent_take_overs_have_exactly_one_winner(self, harness: LedgerHarness) -> None:
        clients = [harness.new_ledger() for _ in range(6)]
        key = new_key()
        harness.ledger.claim(key, meta(), "first", LEASE_S)
        for round_ in range(5):
            harness.expire(key)
            claims = race(6, lambda i: clients[i].claim(key, meta(), f"o{i}", LEASE_S))
            acquired = [c for c in claims if isinstance(c, Acquired)]
            assert len(acquired) == 1, claims
            assert acquired[0].token == round_ + 2

    def test_complete_racing_a_take_over_has_one_outcome(self, harness: LedgerHarness) -> None:
        old, new = harness.new_ledger(), harness.new_ledger()
        for _ in range(10):
            key = new_key()
            old.claim(key, meta(), "old", LEASE_S)
            harness.expire(key)
            done, claim = race(
                2,
                lambda i, key=key: (
                    old.complete(key, 1, EffectState.SUCCEEDED, {"by": "old"})
                    if i == 0
                    else new.claim(key, meta(), "new", LEASE_S)
                ),
            )
            if done:
                assert claim == Finished(key, EffectState.SUCCEEDED, {"by": "old"}, None)
            else:
                assert claim == Acquired(key=key, token=2, attempt=2, previous_sent=False)

    def test_a_send_racing_a_take_over_is_never_missed(self, harness: LedgerHarness) -> None:
        old, new = harness.new_ledger(), harness.new_ledger()
        for _ in range(10):
            key = new_key()
            old.claim(key, meta(), "old", LEASE_S)
            harness.expire(key)

            def holder(key: str = key) -> bool:
                return old.renew(key, 1, LEASE_S) and old.mark_sent(key, 1)

            sent, claim = race(
                2,
                lambda i, holder=holder, key=key: (
                    holder() if i == 0 else new.claim(key, meta(), "new", LEASE_S)
                ),
            )
            if isinstance(claim, Acquired):
                # The holder may have renewed and marked sent only before the take-over.
                assert claim.previous_sent == bool(sent)
            else:
                assert isinstance(claim, Busy) and sent

    # ---- random interleavings ----------------------------------------------------------

    def test_random_interleavings_match_the_model(self, harness: LedgerHarness) -> None:
        machine = type("Machine", (LedgerMachine,), {"harness": harness})
        run_state_machine_as_test(machine, settings=self.machine_settings)


@dataclass
class KeyModel:
    """What the ledger must hold for one key, derived from the operations alone."""

    token: int = 0  # 0: no row yet
    attempts: int = 0
    state: EffectState | None = None
    live: bool = False
    owner: str | None = None
    sent_ever: bool = False
    outcome: tuple[EffectState, Any, str | None] | None = None
    handed: dict[int, str] = field(default_factory=dict)  # token -> owner it was given to

    @property
    def open(self) -> bool:
        return self.state is EffectState.CLAIMED


OWNERS = ("a", "b", "c")
OPS = ("mark_sent", "renew", "release", "complete")
HOLDER_OPS = ("mark_sent", "mark_sent", "renew", "release", "complete")


class LedgerMachine(RuleBasedStateMachine):
    """Owners claim; the current holder sends, renews, releases, completes; anyone may also use
    a stale or made-up token; leases lapse at random. Every answer must match the model, and on
    top of that: a token is handed out once, tokens only grow, a final outcome never changes."""

    harness: ClassVar[LedgerHarness]
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.run = uuid.uuid4().hex[:12]
        self.model: dict[str, KeyModel] = {}
        self.held: dict[tuple[str, str], int] = {}

    @property
    def ledger(self) -> Ledger:
        return self.harness.ledger

    @initialize(target=keys)
    def first_key(self) -> str:
        return self._new_key()

    @precondition(lambda self: len(self.model) < 4)
    @rule(target=keys)
    def another_key(self) -> str:
        return self._new_key()

    def _new_key(self) -> str:
        key = f"sm-{self.run}-{len(self.model)}"
        self.model[key] = KeyModel()
        return key

    # ---- claims --------------------------------------------------------------------------

    @rule(key=keys, owner=st.sampled_from(OWNERS))
    def claim(self, key: str, owner: str) -> None:
        m = self.model[key]
        got = self.ledger.claim(key, meta(), owner, LEASE_S)
        if m.token == 0 or (m.open and not m.live):
            previous_sent = m.sent_ever
            m.token += 1
            m.attempts += 1
            m.state, m.live, m.owner = EffectState.CLAIMED, True, owner
            assert got == Acquired(key, m.token, m.attempts, previous_sent)
            assert m.token not in m.handed, "a token is handed out once"
            assert all(m.token > t for t in m.handed), "tokens only grow"
            m.handed[m.token] = owner
            self.held[(owner, key)] = m.token
        elif m.outcome is not None:
            state, result, error = m.outcome
            assert got == Finished(key, state, result, error)
        else:
            assert isinstance(got, Busy) and got.owner == m.owner

    @rule(key=keys, owner=st.sampled_from(OWNERS))
    def claim_another_request(self, key: str, owner: str) -> None:
        if self.model[key].token == 0:
            return  # it would simply create the row
        with pytest.raises(RequestConflict):
            self.ledger.claim(key, meta("something else"), owner, LEASE_S)

    @rule(key=keys)
    def lease_lapses(self, key: str) -> None:
        self.harness.expire(key)
        if self.model[key].open:
            self.model[key].live = False

    # ---- the current holder acts with its token ------------------------------------------

    # Weighted towards sending: a take-over after a send is where G1 is decided.
    @rule(
        key=keys, op=st.sampled_from(HOLDER_OPS), state=st.sampled_from(FINAL), n=st.integers(0, 2)
    )
    def holder_acts(self, key: str, op: str, state: EffectState, n: int) -> None:
        m = self.model[key]
        if not m.open:
            return
        self._apply(key, m.token, op, state, n)

    @rule(key=keys)
    def holder_sends_then_stalls(self, key: str) -> None:
        """The incident: the tool is called, then the executor hangs or dies past its lease."""
        m = self.model[key]
        if not (m.open and m.live):
            return
        assert self.ledger.mark_sent(key, m.token)
        m.sent_ever = True
        self.lease_lapses(key)

    # ---- anyone acts with the token it holds, a stale one or a made-up one ----------------

    @rule(
        key=keys,
        owner=st.sampled_from(OWNERS),
        skew=st.sampled_from([0, -1, 1, -2]),
        op=st.sampled_from(OPS),
        state=st.sampled_from(FINAL),
        n=st.integers(0, 2),
    )
    def anyone_acts(
        self, key: str, owner: str, skew: int, op: str, state: EffectState, n: int
    ) -> None:
        token = max(0, self.held.get((owner, key), 1) + skew)
        self._apply(key, token, op, state, n)

    def _apply(self, key: str, token: int, op: str, state: EffectState, n: int) -> None:
        m = self.model[key]
        current = token == m.token and m.open
        if op == "mark_sent":
            ok = self.ledger.mark_sent(key, token)
            assert ok == (current and m.live)
            m.sent_ever |= ok
        elif op == "renew":
            assert self.ledger.renew(key, token, LEASE_S) == current
            m.live |= current
        elif op == "release":
            assert self.ledger.release(key, token) == current
            m.live &= not current
        else:
            result = {"n": n}
            error = None if state is EffectState.SUCCEEDED else f"error {n}"
            ok = self.ledger.complete(key, token, state, result, error)
            if current:
                assert ok
                m.state, m.outcome, m.live = state, (state, result, error), False
            else:
                # Only a repeat of the stored outcome by the token that stored it is True.
                assert ok == (token == m.token and m.outcome == (state, result, error))

    @invariant()
    def at_most_one_unfenced_holder(self) -> None:
        for key, m in self.model.items():
            unfenced = [o for o in OWNERS if m.open and self.held.get((o, key)) == m.token]
            assert len(unfenced) <= 1, (key, unfenced)

    @invariant()
    def store_matches_model(self) -> None:
        for key, m in self.model.items():
            record = self.ledger.get(key)
            if m.token == 0:
                assert record is None
                continue
            assert record is not None
            assert (record.fencing_token, record.attempts, record.state) == (
                m.token,
                m.attempts,
                m.state,
            )
            assert (record.sent_at is not None) == m.sent_ever
            if m.outcome is not None:
                assert (record.state, record.result, record.error) == m.outcome
                assert record.completed_at is not None
