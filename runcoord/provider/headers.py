"""The HTTP headers both adapters read or send besides what the SDK handles."""

from __future__ import annotations

from collections.abc import Mapping

# The provider's hint for the next poll; a floor under our own backoff.
POLL_AFTER_HEADER = "openai-poll-after-ms"
# Sent with the effect key on every write. No OpenAI endpoint we call documents honouring
# it, so nothing relies on it; a server that does honour it makes our resends no-ops.
IDEMPOTENCY_HEADER = "Idempotency-Key"


def poll_after_ms(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(POLL_AFTER_HEADER)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None  # a hint we cannot read is no hint
    return value if value >= 0 else None
