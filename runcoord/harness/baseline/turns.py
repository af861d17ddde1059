"""One turn, the variant-A way, over either provider API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

# Variant A tags each provider run with its own run id too; the simulator's records read it
# under this key (runcoord/harness/replay/sims.py configures the simulator so).
RUN_ID_KEY = "runcoord_run_id"
TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled", "expired"})
ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})

# (tool name, arguments JSON, tool call id) -> the output text, through the LRU.
ToolRunner = Callable[[str, str, str], Awaitable[str]]


@dataclass(frozen=True)
class TurnMessage:
    run_id: str
    tenant: str
    thread_id: str  # thread (Assistants) or conversation (Responses)
    assistant_id: str
    provider: str  # assistants | responses
    input: str
    metadata: dict[str, str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnMessage:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    @property
    def tags(self) -> dict[str, str]:
        return {**self.metadata, RUN_ID_KEY: self.run_id}


@dataclass
class Knobs:
    poll_s: float = 0.5
    budget_s: float = 120.0


class AssistantsTurn:
    def __init__(self, client: AsyncOpenAI, run_tool: ToolRunner, knobs: Knobs) -> None:
        self.client, self.run_tool, self.knobs = client, run_tool, knobs
        self.fallback_submissions = 0

    async def __call__(self, turn: TurnMessage) -> tuple[str, str | None]:
        runs = self.client.beta.threads.runs
        try:
            run = await runs.create(
                turn.thread_id,
                assistant_id=turn.assistant_id,
                additional_messages=[{"role": "user", "content": turn.input}],
                metadata=turn.tags,
            )
        except openai.BadRequestError:
            # "Thread already has an active run": take that one (variant A never checks whose).
            adopted = await self._active_run(turn.thread_id)
            if adopted is None:
                return "failed", "create refused and no active run to adopt"
            run = adopted
        deadline = time.monotonic() + self.knobs.budget_s
        while True:
            if run.status in TERMINAL:
                return run.status, None
            if run.status == "requires_action" and run.required_action is not None:
                calls = run.required_action.submit_tool_outputs.tool_calls
                outputs = await asyncio.gather(
                    *(self.run_tool(c.function.name, c.function.arguments, c.id) for c in calls)
                )
                await self._submit(turn.thread_id, run.id, [c.id for c in calls], list(outputs))
            if time.monotonic() > deadline:
                return "timeout", "gave up polling"
            await asyncio.sleep(self.knobs.poll_s)
            try:
                run = await runs.retrieve(run.id, thread_id=turn.thread_id)
            except openai.APIError:
                continue

    async def _active_run(self, thread_id: str) -> Any:
        try:
            page = await self.client.beta.threads.runs.list(thread_id, order="desc", limit=5)
        except openai.APIError:
            return None
        return next((r for r in page.data if r.status in ACTIVE), None)

    async def _submit(
        self, thread_id: str, run_id: str, ids: list[str], outputs: list[str]
    ) -> None:
        runs = self.client.beta.threads.runs
        try:
            await runs.submit_tool_outputs(
                run_id,
                thread_id=thread_id,
                tool_outputs=[
                    {"tool_call_id": i, "output": o} for i, o in zip(ids, outputs, strict=True)
                ],
            )
            return
        except openai.APIError:
            pass
        # Permissive correlation: whatever step is open now gets these outputs, by position.
        try:
            fresh = await runs.retrieve(run_id, thread_id=thread_id)
            if fresh.status != "requires_action" or fresh.required_action is None:
                return
            open_ids = [c.id for c in fresh.required_action.submit_tool_outputs.tool_calls]
            self.fallback_submissions += 1
            await runs.submit_tool_outputs(
                run_id,
                thread_id=thread_id,
                tool_outputs=[
                    {"tool_call_id": i, "output": outputs[n % len(outputs)]}
                    for n, i in enumerate(open_ids)
                ],
            )
        except openai.APIError:
            return


class ResponsesTurn:
    def __init__(self, client: AsyncOpenAI, run_tool: ToolRunner, knobs: Knobs) -> None:
        self.client, self.run_tool, self.knobs = client, run_tool, knobs

    async def __call__(self, turn: TurnMessage) -> tuple[str, str | None]:
        deadline = time.monotonic() + self.knobs.budget_s
        request: Any = turn.input
        while True:
            try:
                response = await self.client.responses.create(
                    model="sim",
                    conversation=turn.thread_id,
                    input=request,
                    background=True,
                    metadata=turn.tags,
                )
            except openai.APIError as exc:
                return "failed", f"create refused: {type(exc).__name__}"
            while response.status in ("queued", "in_progress"):
                if time.monotonic() > deadline:
                    return "timeout", "gave up polling"
                await asyncio.sleep(self.knobs.poll_s)
                try:
                    response = await self.client.responses.retrieve(response.id)
                except openai.APIError:
                    continue
            if response.status != "completed":
                return str(response.status), None
            calls = [item for item in response.output if item.type == "function_call"]
            if not calls:
                return "completed", None
            outputs = await asyncio.gather(
                *(self.run_tool(c.name, c.arguments, c.call_id) for c in calls)
            )
            request = [
                {"type": "function_call_output", "call_id": c.call_id, "output": o}
                for c, o in zip(calls, outputs, strict=True)
            ]
