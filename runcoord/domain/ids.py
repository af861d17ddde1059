"""Deterministic identifiers. Never change these formats: effect keys are stored in the ledger,
sent to tool gateways as Idempotency-Key and compared across versions and restarts."""

from __future__ import annotations

import hashlib

# Never change: bumping it would give every in-flight effect a new key and re-execute it.
_EFFECT_KEY_DOMAIN = b"runcoord/effect/v1"
_APPROVAL_DOMAIN = b"runcoord/approval/v1"


def _digest(domain: bytes, *parts: str) -> str:
    """sha256 over the domain tag and the length-prefixed parts, so ("ab", "c") and
    ("a", "bc") can never collide."""
    h = hashlib.sha256(domain)
    for part in parts:
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()


def effect_key(
    *, tenant: str, thread_id: str, run_id: str, step: str, tool_call_id: str, kind: str
) -> str:
    """The key under which one side effect happens at most once (DESIGN.md, "The effect ledger")."""
    return "ek1_" + _digest(_EFFECT_KEY_DOMAIN, tenant, thread_id, run_id, step, tool_call_id, kind)


def conversation_key(*, tenant: str, conversation: str, provider: str) -> str:
    """The effect key of a conversation's provider thread (Assistants) or conversation
    (Responses): created once per tenant, conversation and protocol, whichever turn comes
    first. Never change it: the ledger row under it is the conversation's mapping."""
    return effect_key(
        tenant=tenant,
        thread_id=conversation,
        run_id="",
        step="",
        tool_call_id="",
        kind=f"create_thread:{provider}",
    )


def payload_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def approval_id(*, run_id: str, step_id: str, tool_call_id: str) -> str:
    """The id of one call's approval request: the same wherever it is computed (the API, a
    scripted approver, the coordinator), so a decision can name a request not yet journaled.
    Never change it."""
    return "apr_" + _digest(_APPROVAL_DOMAIN, run_id, step_id, tool_call_id)[:32]
