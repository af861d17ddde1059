"""How a run moves: queued -> in_progress -> requires_action -> ... -> a terminal status.

Nothing runs in the background. Each transition has a due time, fixed when the previous one
happened, and ``advance`` applies every transition due by "now" whenever anyone looks at the
run. The history is therefore the same however often, or how late, the run is read: only
the clock and the script decide it, and a test with a manual clock needs no waiting.
"""

from __future__ import annotations

from collections.abc import Callable

from runcoord.sim.provider.assistants_model import TERMINAL, Message, Run, RunStep, Thread, ToolCall
from runcoord.sim.provider.errors import bad_request
from runcoord.sim.provider.ids import Ids
from runcoord.sim.provider.timing import Timing


class RunEngine:
    def __init__(self, ids: Ids, timing: Timing, slow_factor: Callable[[], float]) -> None:
        self._ids = ids
        self._timing = timing
        self._slow = slow_factor

    def _queue_s(self, run: Run) -> float:
        queue_ms = run.script.queue_ms if run.script.queue_ms is not None else self._timing.queue_ms
        return queue_ms * self._slow() / 1000

    def _step_s(self, run: Run) -> float:
        latency_ms = run.script.step_latency_ms(run.step_index, self._timing.step_ms)
        return latency_ms * self._slow() / 1000

    def start(self, run: Run) -> None:
        run.status = "queued"
        run.due = run.created_at + self._queue_s(run)

    def advance(self, thread: Thread, run: Run, now: float) -> None:
        while run.status not in TERMINAL:
            due = run.due
            if run.status == "cancelling":
                if due is not None and due <= now:
                    self._cancelled(run, due)
                    continue
                return
            # Expiry races the next transition; the earlier one wins.
            if run.expires_at <= now and (due is None or run.expires_at < due):
                self._expired(run, run.expires_at)
                return
            if due is None or due > now:
                return
            if run.status == "queued":
                run.status = "in_progress"
                if run.started_at is None:
                    run.started_at = due
                run.due = due + self._step_s(run)
            else:
                self._reach_step(thread, run, due)

    def _reach_step(self, thread: Thread, run: Run, at: float) -> None:
        if run.step_index < len(run.script.steps):
            spec = run.script.steps[run.step_index]
            calls = [
                ToolCall(self._ids.alnum("call_"), c.name, c.arguments) for c in spec.tool_calls
            ]
            run.steps.append(self._step(run, "tool_calls", at, tool_calls=calls))
            run.status = "requires_action"
            run.due = None
            return
        final = run.script.final
        run.due = None
        if final.status == "failed":
            run.status = "failed"
            run.failed_at = at
            run.last_error = {"code": "server_error", "message": final.error}
            return
        message = Message(
            id=self._ids.alnum("msg_"),
            created_at=at,
            thread_id=thread.id,
            role="assistant",
            content=[{"type": "text", "text": {"value": final.message, "annotations": []}}],
            metadata={},
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        step = self._step(run, "message_creation", at, message_id=message.id)
        step.status = "completed"
        step.completed_at = at
        step.usage = _usage(40, len(final.message.split()) + 1)
        run.steps.append(step)
        thread.messages.append(message)
        run.usage = _sum_usage(run.steps)
        if final.status == "incomplete":
            message.status = "incomplete"
            message.incomplete_reason = "max_tokens"
            run.status = "incomplete"
            run.incomplete_details = {"reason": "max_completion_tokens"}
        else:
            run.status = "completed"
        run.completed_at = at

    def _step(self, run: Run, kind: str, at: float, **fields: object) -> RunStep:
        return RunStep(
            id=self._ids.alnum("step_"),
            run_id=run.id,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            type=kind,
            created_at=at,
            **fields,  # type: ignore[arg-type]
        )

    def submit(self, run: Run, outputs: list[tuple[str, str]], now: float) -> RunStep:
        """Accept all outputs of the waiting step in one go, or reject with OpenAI's 400."""
        step = run.waiting_step
        if step is None:
            raise bad_request(f'Runs in status "{run.status}" do not accept tool outputs.')
        given = [call_id for call_id, _ in outputs]
        expected = [call.id for call in step.tool_calls]
        duplicates = sorted({c for c in given if given.count(c) > 1})
        if duplicates:
            raise bad_request(
                f"Duplicate tool_call_id {duplicates[0]!r} in tool_outputs.", param="tool_outputs"
            )
        if sorted(given) != sorted(expected):
            raise bad_request(
                f"Expected tool outputs for call_ids {expected}, got {given}.",
                param="tool_outputs",
            )
        by_id = dict(outputs)
        for call in step.tool_calls:
            call.output = by_id[call.id]
        step.status = "completed"
        step.completed_at = now
        step.usage = _usage(40, 10 * len(step.tool_calls))
        run.step_index += 1
        run.status = "queued"
        run.due = now + self._queue_s(run)
        return step

    def cancel(self, run: Run, now: float) -> None:
        if run.status not in ("queued", "in_progress", "requires_action"):
            raise bad_request(f"Cannot cancel run with status '{run.status}'.")
        run.status = "cancelling"
        run.due = now + self._timing.cancel_ms * self._slow() / 1000

    def _cancelled(self, run: Run, at: float) -> None:
        run.status = "cancelled"
        run.cancelled_at = at
        run.due = None
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "cancelled"
                step.cancelled_at = at

    def _expired(self, run: Run, at: float) -> None:
        run.status = "expired"
        run.due = None
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "expired"
                step.expired_at = at


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _sum_usage(steps: list[RunStep]) -> dict[str, int]:
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for step in steps:
        for key, value in (step.usage or {}).items():
            total[key] += value
    return total
