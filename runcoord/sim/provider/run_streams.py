"""A run's event stream, the answer to ``stream: true`` on create run, create thread and run,
and submit tool outputs (the spec's ``AssistantStreamEvent``).

The stream follows the run from the request until the model stops working: it ends after
``thread.run.requires_action`` or the run's terminal event, then ``event: done`` with
``data: [DONE]``, as OpenAI's does. What it sends, in order:

| the run reached | events |
| --- | --- |
| a new thread (create thread and run) | ``thread.created`` |
| queued, on create | ``thread.run.created``, ``thread.run.queued`` |
| queued, on a submission | ``thread.run.step.completed`` (the answered step), ``thread.run.queued`` |
| in_progress | ``thread.run.in_progress`` |
| a step | ``thread.run.step.created`` (and ``.completed`` for a message step), per step |
| requires_action, a terminal status, cancelling | ``thread.run.<status>`` |

Runs move lazily (runs.py): the stream advances the run when the next transition is due,
and at least every ``_LOOK_S`` (a cancel moves it without a due time). A status passed over
between two looks is still sent, so a client always sees ``in_progress`` before the step.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from runcoord.sim.provider.assistants_model import TERMINAL, Run, RunStep, Thread
from runcoord.sim.provider.faults import EndpointClass
from runcoord.sim.provider.middleware import ConnectionDropped
from runcoord.sim.provider.state import SimState
from runcoord.sim.provider.streams import frame as sse

_LOOK_S = 0.25
# Where a stream stops following the run: the model has stopped working.
_ENDS = TERMINAL | {"requires_action"}
_ORDER = ("queued", "in_progress")
# Statuses a run may reach without working first (a cancel, an expiry while queued).
_SKIPS_WORK = frozenset({"cancelling", "cancelled", "expired"})


def _as(run: Run, status: str) -> dict[str, Any]:
    """The run as it was in ``status`` (a working status passed over between two looks)."""
    body = run.to_api()
    if status != run.status:
        body.update(status=status, required_action=None)
    return body


def opened(run: Run) -> list[bytes]:
    """What a create sends first: the run exists, and waits in the queue."""
    body = run.to_api()
    return [sse("thread.run.created", body), sse("thread.run.queued", body)]


def answered(run: Run, step: RunStep) -> list[bytes]:
    """What a submission sends first: the step took its outputs, the run is queued again."""
    return [sse("thread.run.step.completed", step.to_api()), sse("thread.run.queued", run.to_api())]


def _step_events(step: RunStep) -> list[bytes]:
    created = {**step.to_api(), "status": "in_progress", "completed_at": None}
    events = [sse("thread.run.step.created", created)]
    if step.status != "in_progress":
        events.append(sse(f"thread.run.step.{step.status}", step.to_api()))
    return events


async def follow(
    sim: SimState,
    thread: Thread,
    run: Run,
    opening: list[bytes],
    endpoint: EndpointClass,
) -> AsyncIterator[bytes]:
    """``opening`` (what the request itself did), then the run's events until the model
    stops working. With the ``stream_drop_rate`` fault of the ``endpoint`` rule the
    connection is closed before an event, as when a network path fails mid-stream."""
    engine = sim.assistants.engine
    sent_status = run.status
    sent_steps = len(run.steps)
    for chunk in opening:
        yield chunk
    while True:
        engine.advance(thread, run, sim.clock.now())
        chunks: list[bytes] = []
        if run.status != sent_status:
            # A working status passed over between two looks is still told, in order.
            if sent_status in _ORDER:
                for status in _ORDER[_ORDER.index(sent_status) + 1 :]:
                    if run.status == status or run.status in _SKIPS_WORK:
                        break
                    chunks.append(sse(f"thread.run.{status}", _as(run, status)))
            for step in run.steps[sent_steps:]:
                chunks += _step_events(step)
            chunks.append(sse(f"thread.run.{run.status}", run.to_api()))
            sent_status, sent_steps = run.status, len(run.steps)
        for chunk in chunks:
            if sim.faults.drop_stream(endpoint):
                raise ConnectionDropped("run event stream dropped (stream_drop_rate)")
            yield chunk
        if run.status in _ENDS:
            yield sse("done", "[DONE]")
            return
        wait = _LOOK_S if run.due is None else min(_LOOK_S, run.due - sim.clock.now())
        await sim.clock.sleep(max(0.0, wait))
