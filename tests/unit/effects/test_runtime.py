"""The executor runtime's verdict on what a handler raised, for one intent."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.effects.guard import LeaseLost
from runcoord.effects.runtime import Executor, ExecutorConfig

pytestmark = pytest.mark.anyio

INTENT = it.ToolCallIntent(
    effect_key="ek1",
    run_id="r1",
    tenant="t1",
    thread_id="th1",
    provider="assistants",
    step_id="s1",
    tool_call_id="call_1",
    tool="create_ticket",
    arguments="{}",
    deadline_ms=0,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def execute(error: Exception) -> Sequence[Any] | None:
    async def raising(intent: Any) -> Sequence[Any]:
        raise error

    config = ExecutorConfig(bootstrap="", name="tools", kinds=frozenset({"tool_call"}))
    return await Executor(config, raising)._execute(INTENT, threading.Event(), raising)


async def test_an_effect_taken_over_by_another_executor_reports_nothing() -> None:
    # The new holder reports the outcome of record; a second answer would be a lie.
    reports = await execute(LeaseLost("fenced"))
    assert reports == []


async def test_an_unclassified_failure_tells_the_run_with_the_reason() -> None:
    reports = await execute(ValueError("boom"))
    assert reports is not None and len(reports) == 1
    assert isinstance(reports[0], inp.EffectFailed)
    assert "ValueError: boom" in reports[0].reason
