"""The Responses and Conversations objects the simulator keeps, in the spec's shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runcoord.sim.provider.items import Item
from runcoord.sim.provider.scripts import Script

RESPONSE_TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})


@dataclass
class Conversation:
    id: str
    created_at: float
    metadata: dict[str, str]
    items: list[Item] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": int(self.created_at),
            "metadata": self.metadata,
        }


@dataclass
class Response:
    id: str
    created_at: float
    model: str
    settings: dict[str, Any]  # the request's echoed fields (tools, tool_choice, text, ...)
    metadata: dict[str, str]
    background: bool
    script: Script
    step_index: int  # the script step this response performs (len(steps): the final)
    turn_id: str  # the first response of the turn; follow-ups inherit it
    input_items: list[Item]
    previous: Response | None = None
    conversation: Conversation | None = None
    status: str = "queued"
    # Every status it has had, in order: its event stream is derived from them (streams.py).
    statuses: list[str] = field(default_factory=lambda: ["queued"])
    due: float | None = None
    output: list[Item] = field(default_factory=list)
    completed_at: float | None = None
    error: dict[str, str] | None = None
    incomplete_details: dict[str, str] | None = None
    usage: dict[str, Any] | None = None

    def history(self) -> list[Item]:
        """Every item of the previous_response_id chain up to and including this response."""
        earlier = self.previous.history() if self.previous is not None else []
        return [*earlier, *self.input_items, *self.output]

    @property
    def calls(self) -> list[Item]:
        return [item for item in self.output if item["type"] == "function_call"]

    def to_api(self) -> dict[str, Any]:
        body = {
            "id": self.id,
            "object": "response",
            "created_at": int(self.created_at),
            "status": self.status,
            "background": self.background,
            "completed_at": None if self.completed_at is None else int(self.completed_at),
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "model": self.model,
            "output": self.output,
            "previous_response_id": None if self.previous is None else self.previous.id,
            "conversation": None if self.conversation is None else {"id": self.conversation.id},
            "usage": self.usage,
            "metadata": self.metadata,
            **self.settings,
        }
        if self.usage is None:
            # The spec has usage optional but never null: absent until the model is done.
            del body["usage"]
        return body
