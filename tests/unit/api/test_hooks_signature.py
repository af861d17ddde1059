"""Outbound webhooks are signed so that the openai SDK's ``webhooks.unwrap`` (the Standard
Webhooks scheme) verifies them; and the bodies tenants get, with the retry schedule."""

from __future__ import annotations

import base64
import json
import random
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from runcoord.api.deliver import RetryPolicy
from runcoord.api.hooks import SECRET_PREFIX, new_secret, notice, signed_headers
from runcoord.domain import events as ev
from runcoord.domain.model import Approval

FINISHED = ev.RunFinished(run_id="run-1", seq=9, at_ms=1_700_000_123_456, status="completed",
                          reason=None)  # fmt: skip


def sdk(secret: str) -> OpenAI:
    return OpenAI(api_key="unused", base_url="http://127.0.0.1:9", webhook_secret=secret)


def test_the_openai_sdk_verifies_our_signature() -> None:
    secret = new_secret()
    n = notice(FINISHED)
    assert n is not None
    headers = signed_headers(secret, n.event_id, int(time.time()), n.body)
    client = sdk(secret)
    try:
        event = client.webhooks.unwrap(n.body, headers)
        assert event.type == "run.finished"  # type: ignore[comparison-overlap]
        # Tampered, another secret, a stale timestamp: refused.
        with pytest.raises(InvalidWebhookSignatureError):
            client.webhooks.unwrap(n.body.replace(b"completed", b"failed"), headers)
        with pytest.raises(InvalidWebhookSignatureError):
            client.webhooks.unwrap(n.body, headers, secret=new_secret())
        old = signed_headers(secret, n.event_id, int(time.time()) - 3600, n.body)
        with pytest.raises(InvalidWebhookSignatureError, match="too old"):
            client.webhooks.unwrap(n.body, old)
    finally:
        client.close()


def test_the_secret_is_32_random_bytes_in_base64_after_whsec() -> None:
    secret = new_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 32
    assert new_secret() != secret


def test_headers_are_the_standard_webhooks_ones() -> None:
    headers = signed_headers(new_secret(), "run-1:9", 1_700_000_000, b"{}")
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature",
                            "content-type"}  # fmt: skip
    assert headers["webhook-id"] == "run-1:9"
    assert headers["webhook-timestamp"] == "1700000000"
    version, _, mac = headers["webhook-signature"].partition(",")
    assert version == "v1" and len(base64.b64decode(mac)) == 32


def test_run_finished_body() -> None:
    n = notice(ev.RunFinished(run_id="run-1", seq=9, at_ms=1_700_000_123_456, status="failed",
                              reason="deadline"))  # fmt: skip
    assert n is not None and (n.event_id, n.event_type, n.run_id) == ("run-1:9", "run.finished",
                                                                      "run-1")  # fmt: skip
    assert json.loads(n.body) == {
        "id": "run-1:9",
        "object": "event",
        "type": "run.finished",
        "created_at": 1_700_000_123,
        "data": {"run_id": "run-1", "status": "failed", "reason": "deadline"},
    }


def test_approval_requested_body() -> None:
    approval = Approval(approval_id="apr_1", tool_call_id="call_1", tool="send_email",
                        arguments_hash="h", policy_version="v1", deadline_ms=1_700_000_600_000,
                        requested_at_ms=1_700_000_000_000)  # fmt: skip
    event = ev.ApprovalRequested(run_id="run-1", seq=4, at_ms=1_700_000_000_000, step_id="s1",
                                 approval=approval, step_deadline_ms=0,
                                 run_deadline_ms=0)  # fmt: skip
    n = notice(event)
    assert n is not None and n.event_id == "run-1:4"
    assert json.loads(n.body) == {
        "id": "run-1:4",
        "object": "event",
        "type": "approval.requested",
        "created_at": 1_700_000_000,
        "data": {
            "run_id": "run-1",
            "approval_id": "apr_1",
            "tool": "send_email",
            "tool_call_id": "call_1",
            "deadline": "2023-11-14T22:23:20.000Z",
        },
    }


def test_other_events_notify_nobody() -> None:
    assert notice(ev.WatchRenewed(run_id="r", seq=2, at_ms=0, reason="x")) is None


def test_the_retry_schedule_doubles_from_1_s_to_1_h_with_jitter_and_gives_up() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    for attempts, nominal in [(1, 1), (2, 2), (3, 4), (10, 512), (12, 2048), (13, 3600),
                              (29, 3600)]:  # fmt: skip
        delays = [policy.delay_s(attempts, rng) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > nominal / 4  # jittered, not fixed
    assert policy.gives_up(29, 3600, 3600) is None
    assert policy.gives_up(30, 3600, 1) == "gave up after 30 attempts"
    assert "gave up after 23.9 h" in (policy.gives_up(12, 86_000, 3000) or "")
    # The default schedule: 12 attempts in the first ~70 minutes, then about hourly.
    first_hour = sum(min(3600, 2 ** (n - 1)) for n in range(1, 13))
    assert 4000 < first_hour < 4200
