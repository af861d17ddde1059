"""The agent API's OpenAPI document is served, and the API keeps to it (schemathesis).

Short on purpose: a few generated requests per operation, against the real database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from runcoord.kafka import TopicNames
from tests.integration.api.world import World, api

pytestmark = pytest.mark.integration


@pytest.fixture
def world(bootstrap: str, pg_dsn: str, topics: TopicNames) -> Iterator[World]:
    with api(pg_dsn, bootstrap, topics) as w:
        yield w


def test_the_document_is_served(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    assert set(doc["paths"]) == {
        "/v1/threads",
        "/v1/threads/{thread_id}",
        "/v1/threads/{thread_id}/turns",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/events",
        "/v1/runs/{run_id}/cancel",
        "/v1/webhooks/provider",
        "/v1/approvals",
        "/v1/approvals/{approval_id}",
        "/v1/webhooks",
        "/v1/webhooks/{hook_id}",
    }
    turn = doc["paths"]["/v1/threads/{thread_id}/turns"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in turn["parameters"])
    decide = doc["paths"]["/v1/approvals/{approval_id}"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in decide["parameters"])
    cancel = doc["paths"]["/v1/runs/{run_id}/cancel"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in cancel["parameters"])
    assert not any(path.startswith("/console") for path in doc["paths"])


def test_the_api_keeps_to_its_document(world: World) -> None:
    # Driven through Hypothesis directly: schemathesis' pytest plugin predates this pytest.
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 13
    for operation in operations:

        @given(operation.as_strategy())
        @settings(
            max_examples=3,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            # Valid requests may name runs or threads that are not the caller's: 404, by design.
            case.call_and_validate(
                headers=world.auth(world.key_a), excluded_checks=[positive_data_acceptance]
            )

        conforms()
