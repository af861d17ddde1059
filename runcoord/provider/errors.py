"""The provider adapters' errors, and the one place where the openai SDK's errors become them.

The question every caller asks is whether a failed write may have been applied:

- ProviderUnavailable (Retriable): nothing was applied (the request never left, the
  provider refused to take it: 429, or a 5xx/transport error on a read). Try again.
- OutcomeUnknown (Retriable): a write was sent and its answer lost (transport error after
  sending, timeout, 5xx). Reconcile before trying again; never resend blindly.
- ProviderRejected (Fatal): a 4xx the adapter could not explain; the same request fails again.
- Unreconcilable (Fatal): an earlier attempt may have been applied and the provider's
  records cannot say; the run needs an explicit decision, not a retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import httpx2
import openai

from runcoord.errors import Fatal, Retriable
from runcoord.provider.sse import ServerSentEvent
from runcoord.transport import not_sent

# Transport errors raised while a streamed body is read, after the SDK handed it over (it
# wraps only what its own stream class reads).
STREAM_BROKEN: tuple[type[Exception], ...] = (httpx.TransportError, httpx2.TransportError)


class ProviderUnavailable(Retriable):
    """The provider could not be reached or asked us to back off; nothing was applied."""


class OutcomeUnknown(Retriable):
    """A write was sent and no answer came back: it may or may not have been applied."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        thread_id: str,
        provider_run_id: str | None = None,
        step_id: str | None = None,
        effect_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.thread_id = thread_id
        self.provider_run_id = provider_run_id
        self.step_id = step_id
        self.effect_key = effect_key


class ProviderRejected(Fatal):
    """The provider refused the request (4xx); sending it again cannot help."""

    def __init__(
        self, message: str, *, status_code: int, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.param = param


class Unreconcilable(Fatal):
    """An earlier write may have been applied and the provider's records cannot tell."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a call was about, for the error it may become."""

    operation: str  # create_run | retrieve | submit_outputs | cancel | ...
    thread_id: str
    write: bool  # could the request have changed the provider's state?
    provider_run_id: str | None = None
    step_id: str | None = None
    effect_key: str | None = None


def describe(exc: openai.APIError) -> str:
    status = getattr(exc, "status_code", None)
    cause = exc.__cause__
    if status is not None:
        return f"HTTP {status}: {exc.message}"
    if cause is not None:
        return f"{type(exc).__name__} ({type(cause).__name__}: {cause})"
    return f"{type(exc).__name__}: {exc.message}"


def translate(
    exc: openai.APIError, attempt: Attempt
) -> ProviderUnavailable | OutcomeUnknown | ProviderRejected:
    """The SDK's error as ours."""
    text = f"{attempt.operation} on {attempt.thread_id}: {describe(exc)}"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ProviderUnavailable(text)
        if status >= 500 or status == 408:
            # A 5xx may come after the change was applied (a crash mid-handler, a lost answer).
            return _maybe_applied(text, attempt)
        return ProviderRejected(text, status_code=status, code=exc.code, param=exc.param)
    if isinstance(exc, openai.APIConnectionError) and not_sent(exc):
        return ProviderUnavailable(text)  # it never left (runcoord/transport.py)
    # Any other transport error or timeout (APITimeoutError is an APIConnectionError), or an
    # answer that did not parse: the request may have reached the provider.
    return _maybe_applied(text, attempt)


def _maybe_applied(text: str, attempt: Attempt) -> ProviderUnavailable | OutcomeUnknown:
    if not attempt.write:
        return ProviderUnavailable(text)
    return OutcomeUnknown(
        text,
        operation=attempt.operation,
        thread_id=attempt.thread_id,
        provider_run_id=attempt.provider_run_id,
        step_id=attempt.step_id,
        effect_key=attempt.effect_key,
    )


def stream_broken(exc: Exception, attempt: Attempt) -> ProviderUnavailable:
    """One of STREAM_BROKEN while reading a stream: a read, so nothing was applied."""
    return ProviderUnavailable(
        f"{attempt.operation} on {attempt.thread_id}: {type(exc).__name__}: {exc}"
    )


async def first_event(events: AsyncIterator[ServerSentEvent], attempt: Attempt) -> ServerSentEvent:
    """A streamed write's first event. A write is taken as applied on its first event, not
    on the 200 before it: an answer that breaks or ends first (or opens with an error
    event) may or may not have been applied, and is reconciled like any lost answer."""
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        raise answered_then(attempt, "the stream ended before its first event") from exc
    except Exception as exc:  # a broken body (STREAM_BROKEN), or any other way to fail
        raise answered_then(attempt, f"the stream broke: {type(exc).__name__}: {exc}") from exc
    if first.event == "error":
        raise answered_then(attempt, f"the stream opened with an error: {first.data}")
    return first


def answered_then(attempt: Attempt, why: str) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"{attempt.operation} on {attempt.thread_id}: answered 200, then {why}",
        operation=attempt.operation,
        thread_id=attempt.thread_id,
        provider_run_id=attempt.provider_run_id,
        step_id=attempt.step_id,
        effect_key=attempt.effect_key,
    )
