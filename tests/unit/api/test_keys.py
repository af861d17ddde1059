"""Who signs a decision made with an API key."""

from __future__ import annotations

from runcoord.api.keys import Key


def test_a_decision_is_signed_with_the_keys_name_else_its_id() -> None:
    assert Key("k1", "t1", "alice", "approver").approver == "alice"
    assert Key("k2", "t1", None, "approver").approver == "k2"
