"""Tenancy: a tenant runs only the assistants it is allowed, never another tenant's."""

from __future__ import annotations

import psycopg
import pytest

from runcoord.api import tenants
from runcoord.kafka import TopicNames
from tests.integration.api.world import api

pytestmark = pytest.mark.integration


def test_a_tenant_may_name_only_the_assistants_it_is_allowed(
    bootstrap: str, pg_dsn: str, topics: TopicNames, unique: str
) -> None:
    with api(pg_dsn, bootstrap, topics) as w:
        tenant_a = w.tenant_of(w.key_a)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            tenants.allow(conn, tenant_a, f"asst_a_{unique}")

        def post(key: str, assistant: str | None, idem: str) -> int:
            body = {"input": "hi"} | ({"assistant_id": assistant} if assistant else {})
            response = w.client.post(
                f"/v1/threads/th-{idem}-{unique}/turns",
                json=body,
                headers={**w.auth(key), "Idempotency-Key": idem},
            )
            return response.status_code

        assert post(w.key_a, f"asst_a_{unique}", "own") == 202
        # Tenant B names tenant A's assistant (its instructions, its files): refused.
        assert post(w.key_b, f"asst_a_{unique}", "theirs") == 403
        assert post(w.key_a, f"asst_unknown_{unique}", "unknown") == 403
        # Naming none runs the API's default assistant, which every tenant may use.
        assert post(w.key_b, None, "default") == 202

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            refused = conn.execute(
                "SELECT count(*) FROM api_turns WHERE assistant_id = %s AND tenant <> %s",
                (f"asst_a_{unique}", tenant_a),
            ).fetchone()
            assert refused == (0,)  # nothing accepted, nothing on its way to runs.inbox
            tenants.revoke(conn, tenant_a, f"asst_a_{unique}")
        assert post(w.key_a, f"asst_a_{unique}", "after-revoke") == 403
