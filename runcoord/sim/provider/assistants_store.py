"""The Assistants API's assistants, threads, messages and runs, kept in memory.

Handlers run on one event loop and never await between reading and changing this state,
so each request's change is atomic without locks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runcoord.sim.provider.assistants_model import ACTIVE, Assistant, Message, Run, Thread
from runcoord.sim.provider.clock import Clock
from runcoord.sim.provider.errors import bad_request, not_found
from runcoord.sim.provider.ids import Ids
from runcoord.sim.provider.params import SIM_SCRIPT_KEY, Body, invalid_type
from runcoord.sim.provider.runs import RunEngine
from runcoord.sim.provider.scripts import Script, ScriptBook, default_script
from runcoord.sim.provider.timing import Timing

MESSAGE_FIELDS = ("role", "content", "attachments", "metadata")


class AssistantsStore:
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
        self.engine = RunEngine(ids, timing, slow_factor)
        self.assistants: dict[str, Assistant] = {}
        self.threads: dict[str, Thread] = {}
        self.runs: dict[str, Run] = {}

    # -- assistants -------------------------------------------------------------------

    def assistant(self, assistant_id: str) -> Assistant:
        found = self.assistants.get(assistant_id)
        if found is None:
            raise not_found("assistant", assistant_id)
        return found

    def add_assistant(self, assistant: Assistant) -> Assistant:
        if assistant.metadata:
            self.scripts.from_metadata(assistant.metadata, "metadata")  # reject a bad one now
        self.assistants[assistant.id] = assistant
        return assistant

    # -- threads and messages ---------------------------------------------------------

    def thread(self, thread_id: str) -> Thread:
        found = self.threads.get(thread_id)
        if found is None:
            raise not_found("thread", thread_id)
        return found

    def new_thread(self, metadata: dict[str, str]) -> Thread:
        thread = Thread(self.ids.alnum("thread_"), self.clock.now(), metadata)
        self.threads[thread.id] = thread
        return thread

    def active_run(self, thread: Thread) -> Run | None:
        # Only the newest run can be active: OpenAI refuses a run while another is.
        if not thread.runs:
            return None
        run = thread.runs[-1]
        self.engine.advance(thread, run, self.clock.now())
        return run if run.status in ACTIVE else None

    def parse_message(self, data: object, param: str) -> dict[str, Any]:
        """A CreateMessageRequest, checked; returns the fields of the new message."""
        if not isinstance(data, dict):
            raise invalid_type(param, "an object", data)
        body = Body(data, MESSAGE_FIELDS, prefix=f"{param}." if param else "")
        role = body.string("role", required=True)
        if role not in ("user", "assistant"):
            raise bad_request(
                f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
                param=f"{body.prefix}role",
                code="invalid_value",
            )
        metadata = body.metadata()
        self.scripts.from_metadata(metadata, f"{body.prefix}metadata")
        return {
            "role": role,
            "content": _content(body.raw("content"), f"{body.prefix}content"),
            "attachments": body.array("attachments") or [],
            "metadata": metadata,
        }

    def add_message(self, thread: Thread, fields: dict[str, Any]) -> Message:
        active = self.active_run(thread)
        if active is not None:
            raise bad_request(
                f"Can't add messages to {thread.id} while a run {active.id} is active."
            )
        return self._append(thread, fields)

    def _append(self, thread: Thread, fields: dict[str, Any]) -> Message:
        message = Message(
            id=self.ids.alnum("msg_"), created_at=self.clock.now(), thread_id=thread.id, **fields
        )
        thread.messages.append(message)
        return message

    # -- runs -------------------------------------------------------------------------

    def run(self, thread_id: str, run_id: str) -> tuple[Thread, Run]:
        thread = self.thread(thread_id)
        found = self.runs.get(run_id)
        if found is None or found.thread_id != thread_id:
            raise not_found("run", run_id)
        self.engine.advance(thread, found, self.clock.now())
        return thread, found

    def create_run(
        self,
        thread: Thread,
        assistant: Assistant,
        settings: dict[str, Any],
        additional_messages: list[dict[str, Any]],
    ) -> Run:
        active = self.active_run(thread)
        if active is not None:
            raise bad_request(f"Thread {thread.id} already has an active run {active.id}.")
        for fields in additional_messages:
            self._append(thread, fields)
        tools = settings.pop("tools", None)
        tools = assistant.tools if tools is None else tools
        script = self._script_for(thread, assistant, settings["metadata"], tools)
        if settings.get("parallel_tool_calls") is False:
            script = script.sequential()
        now = self.clock.now()
        run = Run(
            id=self.ids.alnum("run_"),
            thread_id=thread.id,
            assistant_id=assistant.id,
            created_at=now,
            expires_at=now + (script.expires_after_s or self.timing.expires_after_s),
            script=script,
            model=settings.pop("model", None) or assistant.model,
            instructions=settings.pop("instructions", None) or assistant.instructions or "",
            tools=tools,
            **settings,
        )
        self.engine.start(run)
        thread.runs.append(run)
        thread.seen_messages = len(thread.messages)
        self.runs[run.id] = run
        return run

    def _script_for(
        self,
        thread: Thread,
        assistant: Assistant,
        metadata: dict[str, str],
        tools: list[dict[str, Any]],
    ) -> Script:
        """First match: run metadata, newest new user message, assistant, config, default."""
        script = self.scripts.from_metadata(metadata, "metadata")
        if script is not None:
            return script
        for message in reversed(thread.messages[thread.seen_messages :]):
            if message.role == "user" and SIM_SCRIPT_KEY in message.metadata:
                found = self.scripts.from_metadata(message.metadata, "metadata")
                assert found is not None
                return found
        from_assistant = self.scripts.from_metadata(assistant.metadata, "metadata")
        if from_assistant is not None:
            return from_assistant
        configured = self.scripts.for_assistant(assistant.id, assistant.name)
        if configured is not None:
            return configured
        functions = [t["function"] for t in tools if t.get("type") == "function"]
        return default_script(functions)


def _content(value: object, param: str) -> list[dict[str, Any]]:
    """Message content as stored: a string becomes one text part with no annotations."""
    if value is None:
        raise bad_request(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if isinstance(value, str):
        return [{"type": "text", "text": {"value": value, "annotations": []}}]
    if not isinstance(value, list) or not value:
        raise invalid_type(param, "a string or a non-empty array", value)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
        elif kind in ("image_file", "image_url") and isinstance(part.get(kind), dict):
            parts.append({"type": kind, kind: part[kind]})
        else:
            raise bad_request(
                f"Invalid '{param}[{index}]': expected a text, image_file or image_url part.",
                param=f"{param}[{index}]",
                code="invalid_value",
            )
    return parts
