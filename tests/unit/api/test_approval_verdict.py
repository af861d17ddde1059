"""What a POSTed decision gets when it was not the one recorded: a replay, or a 409 naming
the decision that stands (the API's first, or the coordinator's)."""

from __future__ import annotations

import pytest

from runcoord.api.approvals import Recorded, verdict

ALICE = Recorded("approve", "fine", "alice", None)
BOB = Recorded("reject", "no", "bob", None)
EXPIRED = Recorded("expired", "not approved in time", "runcoord", None)


@pytest.mark.parametrize(
    ("mine", "ours", "theirs", "awaiting", "outcome", "stands"),
    [
        (ALICE, ALICE, None, True, "replayed", ALICE),  # the same decision again
        (BOB, ALICE, None, True, "conflict", ALICE),  # the loser of a race
        (ALICE, ALICE, ALICE, False, "replayed", ALICE),  # applied by the coordinator since
        (ALICE, ALICE, EXPIRED, False, "conflict", EXPIRED),  # ours came too late
        (ALICE, None, EXPIRED, False, "conflict", EXPIRED),  # nobody decided in time
        (ALICE, None, ALICE, False, "replayed", ALICE),  # decided outside the API, the same
        (ALICE, None, None, True, "key_reused", None),  # the key was another approval's
        (ALICE, None, None, False, "conflict", None),  # the run is over
        (Recorded("approve", "other reason", "alice", None), ALICE, None, True, "conflict", ALICE),
    ],
)
def test_the_decision_that_stands_is_told(
    mine: Recorded,
    ours: Recorded | None,
    theirs: Recorded | None,
    awaiting: bool,
    outcome: str,
    stands: Recorded | None,
) -> None:
    decided = verdict(mine, ours, theirs, awaiting=awaiting)
    assert (decided.outcome, decided.recorded) == (outcome, stands)
