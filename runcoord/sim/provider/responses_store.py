"""Responses and conversations in memory, and how a response moves.

A turn is a chain of responses: the first performs step 0 of the turn's script; a response
that ends with ``function_call`` items is a step needing outputs; the follow-up response
that carries a ``function_call_output`` for every open call is the submission, and performs
the next step. Like runs, responses move by due times applied on read (see ``runs.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runcoord.sim.provider.clock import Clock
from runcoord.sim.provider.errors import ApiError, bad_request
from runcoord.sim.provider.ids import Ids
from runcoord.sim.provider.items import Item, assistant_message, function_call
from runcoord.sim.provider.responses_model import RESPONSE_TERMINAL, Conversation, Response
from runcoord.sim.provider.scripts import Script, ScriptBook, default_script
from runcoord.sim.provider.timing import Timing

_NEW_TURN_ROLES = frozenset({"user", "system", "developer"})


class OutputsMismatch(ApiError):
    """A function_call_output without its call, a repeated one, or a call left unanswered."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, param="input")


@dataclass(frozen=True)
class Plan:
    """What a create request does, decided before anything changes."""

    answered: list[str]  # call ids the request's function_call_outputs answer
    step: Response | None  # the response whose calls they answer: this is a follow-up


class ResponsesStore:
    def __init__(
        self,
        ids: Ids,
        clock: Clock,
        timing: Timing,
        scripts: ScriptBook,
        slow_factor: Callable[[], float],
    ) -> None:
        self.ids = ids
        self.clock = clock
        self.timing = timing
        self.scripts = scripts
        self._slow = slow_factor
        self.responses: dict[str, Response] = {}
        self.conversations: dict[str, Conversation] = {}
        self.call_origin: dict[str, Response] = {}  # call_id -> the response that asked
        # Set (and replaced) whenever a response changes other than by its clock, i.e. on a
        # cancel: every waiting stream then looks again. Cancels are rare; streams are not.
        self._cancelled = asyncio.Event()

    # -- lookups ---------------------------------------------------------------------

    def response(self, response_id: str) -> Response:
        found = self.responses.get(response_id)
        if found is None:
            raise ApiError(404, f"Response with id '{response_id}' not found.")
        self.advance(found)
        return found

    def conversation(self, conversation_id: str) -> Conversation:
        found = self.conversations.get(conversation_id)
        if found is None:
            raise ApiError(404, f"Conversation with id '{conversation_id}' not found.")
        for response in found.responses:
            self.advance(response)
        return found

    def previous(self, response_id: str) -> Response:
        found = self.responses.get(response_id)
        if found is None:
            raise bad_request(
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        self.advance(found)
        return found

    def new_conversation(self, metadata: dict[str, str], items: list[Item]) -> Conversation:
        conversation = Conversation(self.ids.hex("conv_"), self.clock.now(), metadata)
        self.add_items(conversation, items)
        self.conversations[conversation.id] = conversation
        return conversation

    # -- submissions -------------------------------------------------------------------

    def add_items(self, conversation: Conversation, items: list[Item]) -> Plan:
        """Items added to a conversation directly; outputs among them must match a call."""
        answered = _check_outputs(conversation.items, items, require_all=False)
        conversation.items.extend(items)
        return Plan(answered, self.call_origin.get(answered[0]) if answered else None)

    def plan(
        self,
        new_items: list[Item],
        previous: Response | None,
        conversation: Conversation | None,
    ) -> Plan:
        """Check the request's outputs against the open calls; find the step they answer."""
        if conversation is not None:
            context = conversation.items
        elif previous is not None:
            context = previous.history()
        else:
            context = []
        answered = _check_outputs(context, new_items, require_all=True)
        if answered:
            return Plan(answered, self.call_origin.get(answered[0]))
        # Outputs added earlier through conversations.items.create: a response without a
        # new user message then continues the turn whose calls they answered.
        last = previous or (
            conversation.responses[-1] if conversation and conversation.responses else None
        )
        starts_turn = any(
            i["type"] == "message" and i["role"] in _NEW_TURN_ROLES for i in new_items
        )
        if last is not None and last.calls and not starts_turn:
            return Plan([], last)
        return Plan([], None)

    # -- creating and moving responses ---------------------------------------------------

    def create(
        self,
        *,
        model: str,
        settings: dict[str, Any],
        metadata: dict[str, str],
        background: bool,
        input_items: list[Item],
        previous: Response | None,
        conversation: Conversation | None,
        plan: Plan,
    ) -> Response:
        response_id = self.ids.hex("resp_")
        if plan.step is not None:
            # A follow-up continues its turn's script; a sim_script it carries is ignored,
            # so copying metadata onto follow-ups cannot restart the turn.
            script, index, turn_id = plan.step.script, plan.step.step_index + 1, plan.step.turn_id
        else:
            script, index, turn_id = (
                self._script_for(model, settings, metadata, conversation),
                0,
                response_id,
            )
        now = self.clock.now()
        response = Response(
            id=response_id,
            created_at=now,
            model=model,
            settings=settings,
            metadata=metadata,
            background=background,
            script=script,
            step_index=index,
            turn_id=turn_id,
            input_items=input_items,
            previous=previous,
            conversation=conversation,
        )
        queue_ms = script.queue_ms if script.queue_ms is not None else self.timing.queue_ms
        response.due = now + queue_ms * self._slow() / 1000
        if conversation is not None:
            conversation.items.extend(input_items)
            conversation.responses.append(response)
        self.responses[response.id] = response
        return response

    def _script_for(
        self,
        model: str,
        settings: dict[str, Any],
        metadata: dict[str, str],
        conversation: Conversation | None,
    ) -> Script:
        """First match: the response's metadata, the conversation's, the config, default."""
        script = self.scripts.from_metadata(metadata, "metadata")
        if script is None and conversation is not None:
            script = self.scripts.from_metadata(conversation.metadata, "conversation.metadata")
        if script is None:
            script = self.scripts.for_model(model)
        if script is None:
            functions = [t for t in settings["tools"] if t.get("type") == "function"]
            script = default_script(functions)
        return script if settings["parallel_tool_calls"] else script.sequential()

    def finish_at(self, response: Response) -> float:
        """When a response that nobody cancels will be done (for non-background calls)."""
        assert response.due is not None
        latency = response.script.step_latency_ms(response.step_index, self.timing.step_ms)
        if response.status == "queued":
            return response.due + latency * self._slow() / 1000
        return response.due

    def advance(self, response: Response) -> None:
        now = self.clock.now()
        while response.status not in RESPONSE_TERMINAL:
            due = response.due
            if due is None or due > now:
                return
            if response.status == "queued":
                response.status = "in_progress"
                response.statuses.append("in_progress")
                latency = response.script.step_latency_ms(response.step_index, self.timing.step_ms)
                response.due = due + latency * self._slow() / 1000
            else:
                self._finish(response, due)

    def _finish(self, response: Response, at: float) -> None:
        script = response.script
        response.due = None
        if response.step_index < len(script.steps):
            step = script.steps[response.step_index]
            response.output = [
                function_call(self.ids, c.name, c.arguments) for c in step.tool_calls
            ]
            for call in response.output:
                self.call_origin[call["call_id"]] = response
            response.status = "completed"
        elif script.final.status == "failed":
            response.status = "failed"
            response.error = {"code": "server_error", "message": script.final.error}
        elif script.final.status == "incomplete":
            response.output = [assistant_message(self.ids, script.final.message, "incomplete")]
            response.status = "incomplete"
            response.incomplete_details = {"reason": "max_output_tokens"}
        else:
            response.output = [assistant_message(self.ids, script.final.message)]
            response.status = "completed"
        response.statuses.append(response.status)
        if response.status == "completed":
            response.completed_at = at
        response.usage = _usage(response)
        if response.conversation is not None:
            response.conversation.items.extend(response.output)

    async def wait_change(self, response: Response) -> None:
        """Until the response's next transition is due, or something else changed it."""
        if response.status in RESPONSE_TERMINAL:
            return
        assert response.due is not None
        delay = max(0.0, response.due - self.clock.now())
        sleeping = asyncio.ensure_future(self.clock.sleep(delay))
        woken = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()

    def _wake(self) -> None:
        woken, self._cancelled = self._cancelled, asyncio.Event()
        woken.set()

    def asking_step(
        self, previous: Response | None, conversation: Conversation | None
    ) -> Response | None:
        """The response whose calls a (rejected) submission was meant for, best guess."""
        if previous is not None:
            return previous if previous.calls else None
        if conversation is not None:
            for response in reversed(conversation.responses):
                if response.calls:
                    return response
        return None

    def cancel(self, response: Response) -> None:
        if not response.background:
            raise bad_request("Only responses created with background=true can be cancelled.")
        if response.status in ("queued", "in_progress"):
            response.status = "cancelled"
            response.statuses.append("cancelled")
            response.due = None
            self._wake()
        elif response.status != "cancelled":  # cancelling twice is harmless
            raise bad_request(f"Cannot cancel a response with status '{response.status}'.")


def _check_outputs(context: list[Item], new_items: list[Item], *, require_all: bool) -> list[str]:
    """The call ids answered by ``new_items``; OpenAI's 400 for a mismatch."""
    calls = [i["call_id"] for i in (*context, *new_items) if i["type"] == "function_call"]
    answered = {i["call_id"] for i in context if i["type"] == "function_call_output"}
    given: list[str] = []
    for item in new_items:
        if item["type"] != "function_call_output":
            continue
        call_id = item["call_id"]
        if call_id not in calls:
            raise OutputsMismatch(
                f"No tool call found for function call output with call_id {call_id}."
            )
        if call_id in answered or call_id in given:
            raise OutputsMismatch(
                f"Duplicate function_call_output for call_id {call_id}: that call was already"
                " answered."
            )
        given.append(call_id)
    if require_all:
        open_calls = [c for c in calls if c not in answered and c not in given]
        if open_calls:
            raise OutputsMismatch(f"No tool output found for function call {open_calls[0]}.")
    return given


def _usage(response: Response) -> dict[str, Any]:
    words = sum(len(str(item).split()) for item in response.input_items) + 20
    produced = sum(len(str(item).split()) for item in response.output) + 1
    return {
        "input_tokens": words,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": produced,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": words + produced,
    }
