"""The Assistants API objects the simulator keeps, and their JSON in the spec's shapes.

Times are kept as float seconds (transitions are scheduled at millisecond grain) and shown
as whole seconds, as OpenAI does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runcoord.sim.provider.scripts import Script

TERMINAL = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})
ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})


def secs(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass
class Assistant:
    id: str
    created_at: float
    model: str
    name: str | None
    description: str | None
    instructions: str | None
    tools: list[dict[str, Any]]
    metadata: dict[str, str]
    temperature: float | None
    top_p: float | None
    response_format: Any

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "assistant",
            "created_at": secs(self.created_at),
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_resources": {},
            "metadata": self.metadata,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": self.response_format,
        }


@dataclass
class Message:
    id: str
    created_at: float
    thread_id: str
    role: str
    content: list[dict[str, Any]]
    metadata: dict[str, str]
    attachments: list[dict[str, Any]] = field(default_factory=list)
    assistant_id: str | None = None
    run_id: str | None = None
    status: str = "completed"
    incomplete_reason: str | None = None

    def to_api(self) -> dict[str, Any]:
        incomplete = self.status == "incomplete"
        return {
            "id": self.id,
            "object": "thread.message",
            "created_at": secs(self.created_at),
            "thread_id": self.thread_id,
            "status": self.status,
            "incomplete_details": {"reason": self.incomplete_reason} if incomplete else None,
            # A user message is complete on arrival; OpenAI leaves completed_at null on it.
            "completed_at": secs(self.created_at) if self.role == "assistant" else None,
            "incomplete_at": secs(self.created_at) if incomplete else None,
            "role": self.role,
            "content": self.content,
            "assistant_id": self.assistant_id,
            "run_id": self.run_id,
            "attachments": self.attachments,
            "metadata": self.metadata,
        }


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str
    output: str | None = None

    def required(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def step_detail(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments, "output": self.output},
        }


@dataclass
class RunStep:
    id: str
    run_id: str
    thread_id: str
    assistant_id: str
    type: str  # "tool_calls" or "message_creation"
    created_at: float
    status: str = "in_progress"
    tool_calls: list[ToolCall] = field(default_factory=list)
    message_id: str | None = None
    completed_at: float | None = None
    cancelled_at: float | None = None
    expired_at: float | None = None
    failed_at: float | None = None
    usage: dict[str, int] | None = None

    def to_api(self) -> dict[str, Any]:
        details: dict[str, Any]
        if self.type == "tool_calls":
            details = {
                "type": "tool_calls",
                "tool_calls": [call.step_detail() for call in self.tool_calls],
            }
        else:
            details = {
                "type": "message_creation",
                "message_creation": {"message_id": self.message_id},
            }
        return {
            "id": self.id,
            "object": "thread.run.step",
            "created_at": secs(self.created_at),
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "type": self.type,
            "status": self.status,
            "step_details": details,
            "last_error": None,
            "expired_at": secs(self.expired_at),
            "cancelled_at": secs(self.cancelled_at),
            "failed_at": secs(self.failed_at),
            "completed_at": secs(self.completed_at),
            "metadata": {},
            "usage": self.usage,
        }


@dataclass
class Run:
    id: str
    thread_id: str
    assistant_id: str
    created_at: float
    expires_at: float
    script: Script
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    metadata: dict[str, str]
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: dict[str, Any] | None = None
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    response_format: Any = "auto"
    # Where the run is: its status, the time its next timed transition is due (None while
    # it waits on the client), and which script step comes next.
    status: str = "queued"
    due: float | None = None
    step_index: int = 0
    started_at: float | None = None
    cancelled_at: float | None = None
    failed_at: float | None = None
    completed_at: float | None = None
    last_error: dict[str, str] | None = None
    incomplete_details: dict[str, str] | None = None
    usage: dict[str, int] | None = None
    steps: list[RunStep] = field(default_factory=list)

    @property
    def waiting_step(self) -> RunStep | None:
        """The tool_calls step whose outputs the run is waiting for, if any."""
        if self.status == "requires_action" and self.steps:
            return self.steps[-1]
        return None

    def to_api(self) -> dict[str, Any]:
        step = self.waiting_step
        required = (
            {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {"tool_calls": [c.required() for c in step.tool_calls]},
            }
            if step is not None
            else None
        )
        # OpenAI drops expires_at once a run is over, except for the run that expired.
        shown_expiry = (
            self.expires_at if self.status in ACTIVE or self.status == "expired" else None
        )
        return {
            "id": self.id,
            "object": "thread.run",
            "created_at": secs(self.created_at),
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status,
            "required_action": required,
            "last_error": self.last_error,
            "expires_at": secs(shown_expiry),
            "started_at": secs(self.started_at),
            "cancelled_at": secs(self.cancelled_at),
            "failed_at": secs(self.failed_at),
            "completed_at": secs(self.completed_at),
            "incomplete_details": self.incomplete_details,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "metadata": self.metadata,
            "usage": self.usage,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "truncation_strategy": self.truncation_strategy
            or {"type": "auto", "last_messages": None},
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self.response_format,
        }


@dataclass
class Thread:
    id: str
    created_at: float
    metadata: dict[str, str]
    messages: list[Message] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    # Messages before this index were already in the thread when the last run started; a
    # run takes its script only from messages added since.
    seen_messages: int = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": secs(self.created_at),
            "tool_resources": {},
            "metadata": self.metadata,
        }
