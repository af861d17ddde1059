"""Assistants objects read as the port's values: tables over the SDK's own models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.beta.threads import Run
from openai.types.beta.threads.runs import RunStep

from runcoord.domain.model import ToolCall
from runcoord.provider import AssistantsProvider
from runcoord.provider import assistants_mapping as mapping
from runcoord.provider.headers import poll_after_ms
from runcoord.provider.sse import ServerSentEvent


def make_run(status: str, **fields: Any) -> Run:
    base: dict[str, Any] = {
        "id": "run_1",
        "object": "thread.run",
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "created_at": 1_800_000_000,
        "instructions": "",
        "model": "gpt-4o",
        "parallel_tool_calls": True,
        "tools": [],
        "status": status,
        "metadata": {},
    }
    return Run.model_validate({**base, **fields})


def waiting(*call_ids: str) -> dict[str, Any]:
    calls = [
        {"id": c, "type": "function", "function": {"name": f"tool_{c}", "arguments": "{}"}}
        for c in call_ids
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}


def make_step(step_id: str, status: str, *call_ids: str, kind: str = "tool_calls") -> RunStep:
    details: dict[str, Any]
    if kind == "tool_calls":
        details = {
            "type": "tool_calls",
            "tool_calls": [
                {
                    "id": c,
                    "type": "function",
                    "function": {"name": "t", "arguments": "{}", "output": None},
                }
                for c in call_ids
            ],
        }
    else:
        details = {"type": "message_creation", "message_creation": {"message_id": "msg_1"}}
    return RunStep.model_validate(
        {
            "id": step_id,
            "object": "thread.run.step",
            "assistant_id": "asst_1",
            "thread_id": "thread_1",
            "run_id": "run_1",
            "created_at": 1_800_000_000,
            "type": kind,
            "status": status,
            "step_details": details,
        }
    )


@pytest.mark.parametrize(
    ("run", "step_id", "expected"),
    [
        (
            make_run("queued", expires_at=1_800_000_600),
            None,
            ("queued", None, (), 1_800_000_600_000, None),
        ),
        (
            make_run(
                "requires_action", required_action=waiting("c1", "c2"), expires_at=1_800_000_600
            ),
            "step_1",
            (
                "requires_action",
                "step_1",
                (ToolCall("c1", "tool_c1", "{}"), ToolCall("c2", "tool_c2", "{}")),
                1_800_000_600_000,
                None,
            ),
        ),
        # A step id is only ever reported with requires_action.
        (make_run("in_progress"), "step_1", ("in_progress", None, (), None, None)),
        (
            make_run("failed", last_error={"code": "server_error", "message": "boom"}),
            None,
            ("failed", None, (), None, "server_error: boom"),
        ),
        (
            make_run("incomplete", incomplete_details={"reason": "max_completion_tokens"}),
            None,
            ("incomplete", None, (), None, "incomplete: max_completion_tokens"),
        ),
        (
            make_run("expired", expires_at=1_800_000_600),
            None,
            ("expired", None, (), 1_800_000_600_000, None),
        ),
        (make_run("cancelled"), None, ("cancelled", None, (), None, None)),
        (make_run("cancelling"), None, ("cancelling", None, (), None, None)),
        (make_run("completed"), None, ("completed", None, (), None, None)),
    ],
)
def test_to_provider_run(
    run: Run,
    step_id: str | None,
    expected: tuple[str, str | None, tuple[ToolCall, ...], int | None, str | None],
) -> None:
    mapped = mapping.to_provider_run(run, step_id=step_id, poll_after=7)
    assert mapped.provider_run_id == "run_1" and mapped.poll_after_ms == 7
    assert (
        mapped.status,
        mapped.step_id,
        mapped.tool_calls,
        mapped.expires_at_ms,
        mapped.detail,
    ) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"openai-poll-after-ms": "250"}, 250),
        ({}, None),
        ({"openai-poll-after-ms": "soon"}, None),
        ({"openai-poll-after-ms": "-1"}, None),
    ],
)
def test_poll_after_ms(headers: dict[str, str], expected: int | None) -> None:
    assert poll_after_ms(headers) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"runcoord_run_id": "r-1"}, True),
        ({"runcoord_run_id": "r-2"}, False),
        ({"run_id": "r-1"}, False),
        (None, False),
    ],
)
def test_ours(metadata: dict[str, str] | None, expected: bool) -> None:
    assert mapping.ours(make_run("queued", metadata=metadata), "r-1") is expected


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (make_step("step_1", "in_progress", "c1", "c2"), True),
        (make_step("step_1", "in_progress", "c2", "c1"), True),  # order does not matter
        (make_step("step_0", "completed", "c1"), False),  # an earlier step: other calls
        (make_step("step_2", "in_progress", "c1", "c2", "c3"), False),
        (make_step("step_3", "completed", kind="message_creation"), False),
    ],
)
def test_is_waiting_step(step: RunStep, expected: bool) -> None:
    run = make_run("requires_action", required_action=waiting("c1", "c2"))
    assert mapping.is_waiting_step(run, step) is expected


def test_no_step_waits_on_a_run_that_is_not_waiting() -> None:
    assert not mapping.is_waiting_step(make_run("in_progress"), make_step("s", "in_progress"))


WAITING = make_run("requires_action", required_action=waiting("c9"))


@pytest.mark.parametrize(
    ("run", "waiting_step", "step", "expected"),
    [
        # The run still waits on our step: the submission did not land.
        (
            make_run("requires_action", required_action=waiting("c1")),
            "step_1",
            None,
            "not_submitted",
        ),
        # The step completed: its outputs were accepted, whatever the run did next.
        (make_run("queued"), None, make_step("step_1", "completed", "c1"), "already_submitted"),
        (make_run("completed"), None, make_step("step_1", "completed", "c1"), "already_submitted"),
        (WAITING, "step_2", make_step("step_1", "completed", "c1"), "already_submitted"),
        # The step ended without outputs.
        (make_run("expired"), None, make_step("step_1", "expired", "c1"), "run_moved_on"),
        (make_run("cancelled"), None, make_step("step_1", "cancelled", "c1"), "run_moved_on"),
        (make_run("failed"), None, make_step("step_1", "failed", "c1"), "run_moved_on"),
        (make_run("cancelling"), None, make_step("step_1", "in_progress", "c1"), "run_moved_on"),
        # The provider does not know the step, or shows nothing decisive: cannot tell.
        (make_run("queued"), None, None, None),
        (make_run("in_progress"), None, make_step("step_1", "in_progress", "c1"), None),
    ],
)
def test_submission_verdict(
    run: Run, waiting_step: str | None, step: RunStep | None, expected: str | None
) -> None:
    verdict = mapping.submission_verdict(run, waiting_step, step, "step_1")
    assert (verdict.outcome if verdict is not None else None) == expected
    if verdict is not None:
        assert verdict.detail and verdict.new_provider_run_id is None


@pytest.mark.anyio
async def test_a_follow_skips_the_working_run_events_by_name() -> None:
    """Each run event carries the whole run; those named as working are not decoded (here
    they would not decode), and the follow returns the first state past working."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent("thread.run.created", "{not json")
        yield ServerSentEvent("thread.run.queued", "{not json")
        yield ServerSentEvent("thread.run.in_progress", "{not json")
        yield ServerSentEvent("thread.run.completed", make_run("completed").model_dump_json())

    async with AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-unused") as client:
        seen = await AssistantsProvider(client, observe="stream")._follow(stream())
    assert seen is not None and (seen.provider_run_id, seen.status) == ("run_1", "completed")
