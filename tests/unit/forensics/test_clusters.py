"""Duplicate-like clusters and the cause of each repeat, judged from the projection."""

from __future__ import annotations

from runcoord.forensics.clusters import Action, RunLink, attribute, find_clusters

S = 1000


def act(
    n: int,
    at_s: float,
    run: str | None,
    call: str,
    key: str | None,
    *,
    tool: str = "create_ticket",
    payload: str = "p1",
) -> Action:
    return Action(n, tool, "t1", payload, run, call, key, int(at_s * S))  # fmt: skip


RUNS = {
    "r1": RunLink("r1", "th1", "in1", None),
    "r2": RunLink("r2", "th1", "in1", "r1"),  # the client sent r1's turn again
    "r3": RunLink("r3", "th9", "in9", None),  # another conversation
    "r4": RunLink("r4", "th1", "in1", "r2"),  # and again: a chain
}


def causes(actions: list[Action]) -> tuple[list[str], str]:
    [cluster] = find_clusters(actions)
    attribute(cluster, RUNS)
    return cluster.causes, cluster.cause


def test_clusters_need_the_same_tool_tenant_payload_within_the_window() -> None:
    actions = [
        act(1, 0, "r1", "c1", "k1"),
        act(2, 60, "r3", "c9", "k9"),
        act(3, 200, "r3", "c8", "k8"),  # > 90 s after the one before: a new (single) group
        act(4, 10, "r1", "c2", "k2", payload="p2"),
        act(5, 10, "r1", "c3", "k3", tool="send_email"),
    ]
    clusters = find_clusters(actions)
    assert [[a.audit_id for a in c.actions] for c in clusters] == [[1, 2]]


def test_the_same_call_acting_twice_is_a_system_duplicate() -> None:
    assert causes([act(1, 0, "r1", "c1", "k1"), act(2, 3, "r1", "c1", "k1")]) == (
        ["system_duplicate"],
        "system_duplicate",
    )


def test_a_new_run_for_the_same_turn_is_a_client_resubmission() -> None:
    assert causes([act(1, 0, "r1", "c1", "k1"), act(2, 30, "r4", "c7", "k7")]) == (
        ["client_resubmission"],
        "client_resubmission",
    )


def test_another_turn_or_another_call_is_a_legitimate_repeat() -> None:
    found, cause = causes(
        [act(1, 0, "r1", "c1", "k1"), act(2, 1, "r1", "c2", "k2"), act(3, 2, "r3", "c3", "k3")]
    )
    assert found == ["legitimate_repeat", "legitimate_repeat"] and cause == "legitimate_repeat"


def test_the_gravest_cause_names_the_cluster_and_strangers_are_unknown() -> None:
    found, cause = causes(
        [
            act(1, 0, "r1", "c1", "k1"),
            act(2, 1, "elsewhere", "c5", "k5"),
            act(3, 2, "r2", "c6", "k6"),
            act(4, 3, "r2", "c6", "k6"),
        ]
    )
    assert found == ["unknown", "client_resubmission", "system_duplicate"]
    assert cause == "system_duplicate"
