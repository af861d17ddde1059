"""Responses API objects (responses as JSON, conversation items as the SDK's models) read as
the port's values. Pure.

A turn is a chain of background responses in one conversation. A response that completed
with ``function_call`` items is a step needing outputs: status ``requires_action``, step id
= that response's id (stable: the response never changes once done), tool call id = the
item's ``call_id`` (what a ``function_call_output`` answers).

Conversation items carry no response id and no metadata, so what can be read back from a
conversation after a lost answer is only whether *our items* are in it (see README.md):
``InputScan`` (did our turn's input reach it?) and ``OutputsScan`` (did our outputs?).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openai.types.conversations import ConversationItem, Message
from openai.types.responses import ResponseFunctionToolCallItem, ResponseFunctionToolCallOutputItem

from runcoord.domain.model import ToolCall
from runcoord.provider.port import WORKING_STATUSES, ProviderRun, SubmitOutcome

# What a call left open by a cancelled turn is answered with (ResponsesProvider.cancel).
# Never change it: reconciliation recognises a cancelled step by it.
CANCELLED_OUTPUT = "error: the run was cancelled before this tool call was answered"
# Roles that open a turn in a conversation; function calls, their outputs and assistant
# messages belong to the turn in progress.
_TURN_OPENERS = frozenset({"user", "system", "developer"})


# A response as the API's JSON. The adapter reads responses as JSON rather than as the SDK's
# models: the SDK builds a model of every field and item of every response (its tools'
# schemas among them), which cost more CPU than the rest of a step's read; four fields are
# read here.
Body = Mapping[str, Any]


class ResponseShapeError(ValueError):
    """A response, or a stream event, that is not what the spec says it is."""


class StreamEventError(ResponseShapeError):
    """A stream event that is not what the spec says, or the provider's ``error`` event."""


def response_body(data: object) -> Body:
    """``data`` (decoded JSON) as a response: an object with a string ``id``."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ResponseShapeError(f"not a response: {str(data)[:200]!r}")
    return data


def function_calls(response: Body) -> tuple[ToolCall, ...]:
    calls = []
    for item in response.get("output") or ():
        if not isinstance(item, dict) or item.get("type") != "function_call":
            continue
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            raise ResponseShapeError(f"response {response['id']}: a function call {item!r}")
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def status(response: Body) -> str:
    current = response.get("status") or "queued"  # a background response always says
    if current == "completed" and function_calls(response):
        return "requires_action"
    return str(current)


def detail(response: Body) -> str | None:
    error = response.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    incomplete = response.get("incomplete_details")
    if isinstance(incomplete, dict) and incomplete.get("reason"):
        return f"incomplete: {incomplete['reason']}"
    return None


def to_provider_run(response: Body, *, poll_after: int | None) -> ProviderRun:
    mapped = status(response)
    waiting = mapped == "requires_action"
    return ProviderRun(
        provider_run_id=response["id"],
        status=mapped,
        step_id=response["id"] if waiting else None,
        tool_calls=function_calls(response) if waiting else (),
        # No server-side expiry: our step deadline is the only guard against a stall.
        expires_at_ms=None,
        detail=detail(response),
        poll_after_ms=poll_after,
    )


# The stream events that carry the whole response, and so its status.
LIFECYCLE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
# The events that can end a response's working: the only ones a follow of a write decodes
# (each lifecycle event carries the whole response, tools and all, and a response sends
# three or more of them while it works, besides its items' events).
FINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


def stream_event(data: str) -> tuple[int, ProviderRun | None]:
    """A stream event's ``sequence_number`` and, for an event carrying the response, the
    state it shows (a working response is read from its status alone)."""
    try:
        payload = json.loads(data)
        sequence, kind = payload["sequence_number"], payload["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StreamEventError(f"not a stream event: {data[:200]!r}") from exc
    if not isinstance(sequence, int):
        raise StreamEventError(f"sequence_number {sequence!r} is not an integer")
    if kind == "error":
        raise StreamEventError(f"error event: {payload.get('code')}: {payload.get('message')}")
    if kind not in LIFECYCLE_EVENTS:
        return sequence, None
    try:
        body = response_body(payload.get("response"))
        if body.get("status") in WORKING_STATUSES:
            return sequence, ProviderRun(body["id"], body["status"], None, (), None, None, None)
        return sequence, to_provider_run(body, poll_after=None)
    except ResponseShapeError as exc:
        raise StreamEventError(f"{kind} {sequence}: {exc}") from exc


def message_text(item: ConversationItem) -> str | None:
    """The text of a message item (its text parts joined); None for other items."""
    if not isinstance(item, Message):
        return None
    return "".join(getattr(part, "text", "") or "" for part in item.content)


def opens_turn(item: ConversationItem) -> bool:
    return isinstance(item, Message) and item.role in _TURN_OPENERS


@dataclass
class InputScan:
    """Reads a conversation newest first: is the latest turn opened by our input?

    Feed items with ``see`` until it returns True (decided) or the items run out.
    """

    text: str
    found: bool = False

    def see(self, item: ConversationItem) -> bool:
        if not opens_turn(item):
            return False
        self.found = isinstance(item, Message) and item.role == "user"
        self.found = self.found and message_text(item) == self.text
        return True

    def see_all(self, items: Iterable[ConversationItem]) -> InputScan:
        for item in items:
            if self.see(item):
                break
        return self


@dataclass
class OutputsScan:
    """Reads a conversation newest first: which of a step's calls have outputs in it?

    Outputs come after their calls, so once every call has been seen, nothing older can
    change the answer: ``see`` then returns True.
    """

    call_ids: frozenset[str]
    asked: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)  # answered by a cancel, not a submission

    def see(self, item: ConversationItem) -> bool:
        if isinstance(item, ResponseFunctionToolCallOutputItem) and item.call_id in self.call_ids:
            self.answered.add(item.call_id)
            if item.output == CANCELLED_OUTPUT:
                self.closed.add(item.call_id)
        elif isinstance(item, ResponseFunctionToolCallItem) and item.call_id in self.call_ids:
            self.asked.add(item.call_id)
        return self.asked == self.call_ids

    def see_all(self, items: Iterable[ConversationItem]) -> OutputsScan:
        for item in items:
            if self.see(item):
                break
        return self

    def verdict(self, conversation_id: str) -> SubmitOutcome | None:
        if self.asked != self.call_ids:
            return None  # the step's calls are not in this conversation: cannot tell
        if self.answered == self.call_ids and self.closed == self.call_ids:
            return SubmitOutcome(
                "run_moved_on",
                f"the turn was cancelled: conversation {conversation_id} has its calls closed",
            )
        if self.answered == self.call_ids:
            return SubmitOutcome(
                "already_submitted",
                f"conversation {conversation_id} has outputs for {sorted(self.call_ids)}; the"
                " follow-up response that carried them cannot be named (conversation items"
                " carry no response id)",
            )
        if not self.answered:
            return SubmitOutcome(
                "not_submitted", f"conversation {conversation_id} has no output for the step"
            )
        # One request carries every output of a step, so a partial answer is not ours.
        return None


# A step found in the conversation rather than in a response we can name: the response we
# follow, "+", the first new call id. Stable across polls; submit_outputs takes the model
# and metadata from the base response.
DERIVED_STEP_SEPARATOR = "+"


def base_response_id(step_id: str) -> str:
    return step_id.split(DERIVED_STEP_SEPARATOR, 1)[0]


@dataclass
class ProgressScan:
    """Reads a conversation newest first, down to the outputs of a step we answered: how
    has the turn moved on since, in a follow-up response whose id is lost?

    After a lost answer (or a crash between sending and recording) the follow-up cannot be
    named: conversation items carry no response id and responses cannot be listed. Its
    effects are in the conversation all the same: new function calls, or a message.
    """

    answered_calls: frozenset[str]
    calls: list[ToolCall] = field(default_factory=list)  # newer than our outputs, newest first
    outputs: set[str] = field(default_factory=set)
    ends_with_message: bool | None = None  # is the newest item of the turn a reply?
    reached: bool = False
    asked: set[str] = field(default_factory=set)  # the step's own calls, seen

    def see(self, item: ConversationItem) -> bool:
        if isinstance(item, ResponseFunctionToolCallOutputItem):
            if item.call_id in self.answered_calls:
                self.reached = True
                return True
            if item.call_id:
                self.outputs.add(item.call_id)
        elif isinstance(item, ResponseFunctionToolCallItem):
            if item.call_id in self.answered_calls:
                # Outputs come after their calls: past all of the step's calls without one
                # of its outputs, nothing older can show it answered. (Reading on to the
                # conversation's first item, a watch's every look at a step did.)
                self.asked.add(item.call_id)
                return self.asked == self.answered_calls
            self.calls.append(ToolCall(item.call_id, item.name, item.arguments))
        elif (
            isinstance(item, Message)
            and item.role == "assistant"
            and self.ends_with_message is None
        ):
            self.ends_with_message = not self.calls and not self.outputs
        return False

    def run(self, followed: str) -> ProviderRun | None:
        """The turn's state as the conversation shows it; None if our outputs are not there."""
        if not self.reached:
            return None
        open_calls = tuple(c for c in reversed(self.calls) if c.id not in self.outputs)
        if open_calls:
            step = f"{followed}{DERIVED_STEP_SEPARATOR}{open_calls[0].id}"
            return ProviderRun(followed, "requires_action", step, open_calls, None, None, None)
        if self.ends_with_message:
            return ProviderRun(followed, "completed", None, (), None, None, None)
        return ProviderRun(followed, "in_progress", None, (), None, None, None)
