"""Provider webhooks: verified with the openai SDK's helpers, then turned into observations
where that is safe, and recorded (answered 200) where it is not.

What is safe: ``response.failed``, ``response.cancelled`` and ``response.incomplete`` are final
whatever the response holds, so they become a terminal RunObserved for the run whose current
provider run is that response, naming the run's current watch. The coordinator applies it like
any observation: once, and only if the watch is still current (a stale one is journaled as
ignored), so a late or repeated webhook can never move a run backwards.

What is not: ``response.completed`` does not say whether the response ended with function
calls. If it did, the run needs tool outputs (requires_action), not a finish; the webhook does
not carry the calls, and guessing either way is what G4 forbids. Those events, events for
responses we do not know (yet), and every other event type are recorded with the reason and
answered 200, so the provider does not retry them forever; the executor's watch reads the
response itself and reports what it finds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from openai import InvalidWebhookSignatureError, OpenAI

from runcoord.api.turns import enqueue
from runcoord.codec import AvroCodec
from runcoord.domain.inputs import RunObserved

Conn = psycopg.Connection[tuple[Any, ...]]

# Final statuses a webhook can state on its own, and the vendor-neutral status each one is.
FINAL_EVENTS = {
    "response.failed": "failed",
    "response.cancelled": "cancelled",
    "response.incomplete": "incomplete",
}


class BadSignature(Exception):
    """The webhook was not signed with our secret (or is too old, or lacks its headers)."""


@dataclass(frozen=True)
class Handled:
    webhook_id: str
    handling: str  # observation | recorded
    reason: str | None
    run_id: str | None
    duplicate: bool = False


class Verifier:
    """Checks signatures with the SDK's ``client.webhooks.unwrap`` and our secret."""

    def __init__(self, secret: str) -> None:
        # No API call is ever made: the client only carries the SDK's webhook helpers.
        self._client = OpenAI(
            api_key="unused", base_url="http://127.0.0.1:9", webhook_secret=secret
        )

    def close(self) -> None:
        self._client.close()

    def verify(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """The event as a dict, once its signature checks out; BadSignature otherwise."""
        try:
            event = self._client.webhooks.unwrap(body, headers)
        except (InvalidWebhookSignatureError, ValueError) as exc:
            # ValueError: a required header is missing, or the body is not JSON.
            raise BadSignature(str(exc)) from exc
        data = json.loads(body)
        if not isinstance(data, dict) or not isinstance(getattr(event, "type", None), str):
            raise BadSignature("the signed body is not a webhook event")
        return data


def handle(
    conn: Conn,
    webhook_id: str,
    event: dict[str, Any],
    *,
    journal: str,
    inbox: str,
    codec: AvroCodec,
) -> Handled:
    """Record the event once; enqueue its observation in the same transaction where safe."""
    event_type = str(event.get("type", ""))
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    object_id = str(data.get("id")) if data and data.get("id") else None
    with conn.transaction():
        run = _run_of(conn, journal, object_id) if object_id else None
        handling, reason, observation = _decide(event_type, object_id, run)
        inserted = conn.execute(
            "INSERT INTO api_webhook_events (webhook_id, event_type, provider_object_id, run_id, "
            "handling, reason, body) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (webhook_id) DO NOTHING RETURNING webhook_id",
            (
                webhook_id,
                event_type,
                object_id,
                run[0] if run else None,
                handling,
                reason,
                json.dumps(event),
            ),
        ).fetchone()
        if inserted is None:
            # A redelivery: handled the first time, nothing more to do.
            return Handled(webhook_id, handling, reason, run[0] if run else None, duplicate=True)
        if observation is not None:
            enqueue(conn, inbox, observation.run_id, observation, codec)
    return Handled(webhook_id, handling, reason, run[0] if run else None)


def _run_of(conn: Conn, journal: str, provider_run_id: str) -> tuple[str, int, str] | None:
    row = conn.execute(
        "SELECT run_id, watch_seq, phase FROM forensics_runs "
        "WHERE journal = %s AND provider_run_id = %s",
        (journal, provider_run_id),
    ).fetchone()
    return (str(row[0]), int(row[1]), str(row[2])) if row else None


def _decide(
    event_type: str, object_id: str | None, run: tuple[str, int, str] | None
) -> tuple[str, str | None, RunObserved | None]:
    status = FINAL_EVENTS.get(event_type)
    if event_type == "response.completed":
        return (
            "recorded",
            "a completed response may end in function calls (a step needing outputs) and the "
            "webhook does not carry them; the watch reads the response and decides",
            None,
        )
    if status is None:
        return "recorded", f"{event_type or 'an untyped event'} says nothing about a run", None
    if run is None:
        return "recorded", f"no run's current provider run is {object_id}", None
    run_id, watch, phase = run
    if phase in ("completed", "failed", "cancelled", "expired", "incomplete"):
        return "recorded", f"run {run_id} already finished ({phase})", None
    observation = RunObserved(
        run_id=run_id,
        watch=watch,
        status=status,
        step_id=None,
        tool_calls=(),
        expires_at_ms=None,
        detail=f"provider webhook {event_type}",
        changed=True,
    )
    return "observation", None, observation
