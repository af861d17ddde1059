"""A place to run turns: one adapter, a thread (or conversation) on the simulator, helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI

from runcoord.domain.model import Output
from runcoord.provider import (
    AssistantsProvider,
    Observe,
    ProviderRun,
    ResponsesProvider,
    RunProvider,
    SubmitOutcome,
)
from runcoord.provider.port import Turn

from .conftest import FAST, Sim

ASSISTANT_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "create_ticket",
            "parameters": {
                "type": "object",
                "properties": {"title": {"type": "string"}},
                "required": ["title"],
            },
        },
    }
]
RESPONSE_TOOLS: Any = [
    {
        "type": "function",
        "name": "create_ticket",
        "parameters": {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
# Two steps: one call, then two calls at once; then a message.
TWO_STEPS: dict[str, Any] = {
    "steps": [
        {"tool_calls": [{"name": "create_ticket", "arguments": {"title": "a"}}]},
        {
            "tool_calls": [
                {"name": "create_ticket", "arguments": {"title": "b"}},
                {"name": "send_email", "arguments": {"to": "c"}},
            ]
        },
    ],
    "final": {"message": "Done."},
}


@dataclass
class World:
    provider: RunProvider
    sim: Sim
    thread_id: str
    assistant_id: str  # the model, for the Responses adapter

    @property
    def follows(self) -> bool:
        """Whether the adapter's writes follow the run (a streamed adapter)."""
        return isinstance(self.provider, AssistantsProvider | ResponsesProvider) and (
            self.provider.observe == "stream"
        )

    async def create(
        self,
        run_id: str = "r-1",
        script: dict[str, Any] | None = None,
        after_unknown_outcome: bool = False,
    ) -> tuple[ProviderRun, bool]:
        metadata = {"sim_script": json.dumps(script)} if script is not None else None
        return await self.provider.create_run(
            run_id=run_id,
            thread_id=self.thread_id,
            assistant_id=self.assistant_id,
            input=f"turn {run_id}",
            effect_key=f"ek-create-{run_id}",
            metadata=metadata,
            after_unknown_outcome=after_unknown_outcome,
        )

    async def observe(self, provider_run_id: str) -> ProviderRun:
        return await self.provider.retrieve(
            thread_id=self.thread_id, provider_run_id=provider_run_id
        )

    async def until(self, run: ProviderRun, *statuses: str) -> ProviderRun:
        """Watch until the run reaches one of ``statuses`` (fails after a few seconds)."""
        for _ in range(100):
            if run.status in statuses:
                return run
            run, _ = await self.provider.watch(
                thread_id=self.thread_id,
                provider_run_id=run.provider_run_id,
                since_status=run.status,
                since_step=run.step_id,
                timeout_ms=2_000,
            )
        raise AssertionError(f"run {run.provider_run_id} is {run.status}, not in {statuses}")

    async def waiting(
        self, run_id: str = "r-1", script: dict[str, Any] | None = None
    ) -> ProviderRun:
        run, _ = await self.create(run_id, script)
        return await self.until(run, "requires_action")

    async def submit(
        self, run: ProviderRun, text: str = "T-1", turn: Turn | None = None
    ) -> SubmitOutcome:
        assert run.step_id is not None
        return await self.provider.submit_outputs(
            thread_id=self.thread_id,
            provider_run_id=run.provider_run_id,
            step_id=run.step_id,
            outputs=outputs_for(run, text),
            effect_key=f"ek-submit-{run.step_id}",
            turn=turn,
        )

    async def reconcile(self, run: ProviderRun, text: str = "T-1") -> SubmitOutcome | None:
        assert run.step_id is not None
        return await self.provider.reconcile_submission(
            thread_id=self.thread_id,
            provider_run_id=run.provider_run_id,
            step_id=run.step_id,
            outputs=outputs_for(run, text),
        )

    async def after(self, run: ProviderRun, outcome: SubmitOutcome) -> ProviderRun:
        """The turn after a submission: the follow-up response, or the same run."""
        return await self.observe(outcome.new_provider_run_id or run.provider_run_id)

    async def cancel(self, run: ProviderRun) -> str:
        return await self.provider.cancel(
            thread_id=self.thread_id, provider_run_id=run.provider_run_id
        )


def outputs_for(run: ProviderRun, text: str) -> tuple[Output, ...]:
    return tuple(Output(c.id, text, False, "tool", "hash") for c in run.tool_calls)


async def assistants_world(client: AsyncOpenAI, sim: Sim, observe: Observe = "poll") -> World:
    assistant = await client.beta.assistants.create(model="gpt-4o", tools=ASSISTANT_TOOLS)
    thread = await client.beta.threads.create()
    provider = AssistantsProvider(client, backoff=FAST, observe=observe)
    return World(provider, sim, thread.id, assistant.id)


async def responses_world(client: AsyncOpenAI, sim: Sim, observe: Observe = "poll") -> World:
    conversation = await client.conversations.create()
    provider = ResponsesProvider(client, tools=RESPONSE_TOOLS, backoff=FAST, observe=observe)
    return World(provider, sim, conversation.id, "gpt-4o")
