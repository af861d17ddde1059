"""The SDK's errors as ours: may the write have been applied, and may it be retried?"""

from __future__ import annotations

import httpx
import httpx2
import openai
import pytest

from runcoord.errors import Fatal, Retriable
from runcoord.provider.errors import (
    Attempt,
    OutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    translate,
)

REQUEST = httpx2.Request("POST", "http://provider.test/v1/threads/thread_1/runs")
WRITE = Attempt("submit_outputs", "thread_1", True, "run_1", "step_1", "ek1")
READ = Attempt("retrieve", "thread_1", False, "run_1")


def status_error(status: int, code: str | None = None) -> openai.APIStatusError:
    body = {"error": {"message": "boom", "type": "invalid_request_error", "code": code}}
    response = httpx2.Response(status, request=REQUEST, json=body)
    return openai.APIStatusError("boom", response=response, body=body["error"])


def connection_error(cause: BaseException) -> openai.APIConnectionError:
    error = openai.APIConnectionError(request=REQUEST)
    error.__cause__ = cause
    return error


def timeout_error(cause: BaseException) -> openai.APITimeoutError:
    error = openai.APITimeoutError(request=REQUEST)
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        # Refused before anything happened, whatever the call.
        (status_error(429), WRITE, ProviderUnavailable),
        (connection_error(httpx2.ConnectError("refused")), WRITE, ProviderUnavailable),
        (connection_error(httpx.ConnectError("refused")), WRITE, ProviderUnavailable),
        (timeout_error(httpx2.ConnectTimeout("slow")), WRITE, ProviderUnavailable),
        (timeout_error(httpx2.PoolTimeout("busy")), WRITE, ProviderUnavailable),
        # Sent, then no usable answer: a write may have been applied.
        (status_error(500), WRITE, OutcomeUnknown),
        (status_error(503), WRITE, OutcomeUnknown),
        (status_error(408), WRITE, OutcomeUnknown),
        (connection_error(httpx2.RemoteProtocolError("dropped")), WRITE, OutcomeUnknown),
        (connection_error(httpx2.ReadError("reset")), WRITE, OutcomeUnknown),
        (timeout_error(httpx2.ReadTimeout("slow")), WRITE, OutcomeUnknown),
        # ... while a read that failed the same way just failed.
        (status_error(500), READ, ProviderUnavailable),
        (timeout_error(httpx2.ReadTimeout("slow")), READ, ProviderUnavailable),
        # The provider said no: the same request fails again.
        (status_error(400), WRITE, ProviderRejected),
        (status_error(401), READ, ProviderRejected),
        (status_error(404), READ, ProviderRejected),
    ],
)
def test_translate(error: openai.APIError, attempt: Attempt, expected: type[Exception]) -> None:
    ours = translate(error, attempt)
    assert type(ours) is expected
    assert isinstance(ours, Retriable) is (expected is not ProviderRejected)
    assert isinstance(ours, Fatal) is (expected is ProviderRejected)


def test_an_unknown_outcome_carries_what_is_known() -> None:
    ours = translate(connection_error(httpx2.ReadError("reset")), WRITE)
    assert isinstance(ours, OutcomeUnknown)
    assert (ours.operation, ours.thread_id, ours.provider_run_id, ours.step_id) == (
        "submit_outputs",
        "thread_1",
        "run_1",
        "step_1",
    )
    assert ours.effect_key == "ek1"
    assert "ReadError" in str(ours)


def test_a_rejection_carries_the_status_and_code() -> None:
    ours = translate(status_error(400, code="invalid_value"), WRITE)
    assert isinstance(ours, ProviderRejected)
    assert (ours.status_code, ours.code) == (400, "invalid_value")
    assert "HTTP 400" in str(ours)
