"""The Assistants API under /v1: assistants, threads, messages, runs, run steps.

Each handler parses its body, passes the fault gate with its endpoint class, then changes
the store. Shapes follow the spec's AssistantObject, ThreadObject, MessageObject, RunObject
and RunStepObject (checked by tests/unit/sim/provider/test_provider_spec.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from runcoord.sim.provider import run_streams
from runcoord.sim.provider.assistants_model import Assistant, Run, Thread
from runcoord.sim.provider.errors import ApiError, not_found
from runcoord.sim.provider.faults import gate
from runcoord.sim.provider.paging import list_body, page_params, paginate
from runcoord.sim.provider.params import Body, function_tools, invalid_type, read_json_object
from runcoord.sim.provider.records import CreateRecord
from runcoord.sim.provider.state import SimState, created_once, sim_of
from runcoord.sim.provider.streams import frame

T = TypeVar("T")

ASSISTANT_FIELDS = (
    "model", "name", "description", "instructions", "reasoning_effort", "tools",
    "tool_resources", "metadata", "temperature", "top_p", "response_format",
)  # fmt: skip
THREAD_FIELDS = ("messages", "tool_resources", "metadata")
RUN_FIELDS = (
    "assistant_id", "model", "reasoning_effort", "instructions", "additional_instructions",
    "additional_messages", "tools", "metadata", "temperature", "top_p", "stream",
    "max_prompt_tokens", "max_completion_tokens", "truncation_strategy", "tool_choice",
    "parallel_tool_calls", "response_format",
)  # fmt: skip
THREAD_AND_RUN_FIELDS = (
    "assistant_id", "thread", "model", "instructions", "tools", "tool_resources", "metadata",
    "temperature", "top_p", "stream", "max_prompt_tokens", "max_completion_tokens",
    "truncation_strategy", "tool_choice", "parallel_tool_calls", "response_format",
)  # fmt: skip


# async: FastAPI would run a plain def dependency in its thread pool, a hop per request.
async def require_beta(request: Request) -> None:
    """OpenAI answers Assistants calls without ``OpenAI-Beta: assistants=v2`` with a 400."""
    if not sim_of(request).config.require_beta_header:
        return
    if "assistants=v2" not in request.headers.get("openai-beta", ""):
        raise ApiError(
            400,
            "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try"
            " again by setting the header 'OpenAI-Beta: assistants=v2'.",
            code="invalid_beta",
        )


router = APIRouter(dependencies=[Depends(require_beta)])


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, headers=headers)


# -- assistants -----------------------------------------------------------------------


@router.post("/assistants")
async def create_assistant(request: Request) -> JSONResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), ASSISTANT_FIELDS)
    await gate(sim.faults, sim.clock, request, "other")
    model = body.string("model", required=True)
    assert model is not None
    assistant = Assistant(
        id=sim.ids.alnum("asst_"),
        created_at=sim.clock.now(),
        model=model,
        name=body.string("name"),
        description=body.string("description"),
        instructions=body.string("instructions"),
        tools=function_tools(body.array("tools") or [], "tools"),
        metadata=body.metadata(),
        temperature=_or_default(body.number("temperature"), 1.0),
        top_p=_or_default(body.number("top_p"), 1.0),
        response_format=body.raw("response_format") or "auto",
    )
    return _json(sim.assistants.add_assistant(assistant).to_api())


@router.get("/assistants")
async def list_assistants(request: Request) -> JSONResponse:
    sim = sim_of(request)
    params = page_params(request)
    await gate(sim.faults, sim.clock, request, "list")
    page, more = paginate(list(sim.assistants.assistants.values()), params, lambda a: a.id)
    return _json(list_body([a.to_api() for a in page], more))


@router.get("/assistants/{assistant_id}")
async def retrieve_assistant(assistant_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    return _json(sim.assistants.assistant(assistant_id).to_api())


@router.delete("/assistants/{assistant_id}")
async def delete_assistant(assistant_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "other")
    sim.assistants.assistant(assistant_id)
    del sim.assistants.assistants[assistant_id]
    return _json({"id": assistant_id, "object": "assistant.deleted", "deleted": True})


# -- threads and messages ---------------------------------------------------------------


@router.post("/threads")
async def create_thread(request: Request) -> JSONResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), THREAD_FIELDS)
    await gate(sim.faults, sim.clock, request, "other")

    def create() -> tuple[str, dict[str, str]]:
        thread = _new_thread(sim, body)
        return thread.id, thread.metadata

    thread_id, replayed = created_once(
        sim, "assistants", request.headers.get("idempotency-key"), create
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return _json(sim.assistants.thread(thread_id).to_api(), headers=headers)


def _new_thread(sim: SimState, body: Body) -> Thread:
    messages = [
        sim.assistants.parse_message(m, f"messages[{i}]")
        for i, m in enumerate(body.array("messages") or [])
    ]
    thread = sim.assistants.new_thread(body.metadata())
    for fields in messages:
        sim.assistants.add_message(thread, fields)
    return thread


@router.get("/threads/{thread_id}")
async def retrieve_thread(thread_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    return _json(sim.assistants.thread(thread_id).to_api())


@router.delete("/threads/{thread_id}")
async def delete_thread(thread_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "other")
    sim.assistants.thread(thread_id)
    del sim.assistants.threads[thread_id]
    return _json({"id": thread_id, "object": "thread.deleted", "deleted": True})


@router.post("/threads/{thread_id}/messages")
async def create_message(thread_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    data = await read_json_object(request)
    await gate(sim.faults, sim.clock, request, "other")
    thread = sim.assistants.thread(thread_id)
    fields = sim.assistants.parse_message(data, "")
    return _json(sim.assistants.add_message(thread, fields).to_api())


@router.get("/threads/{thread_id}/messages")
async def list_messages(thread_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    params = page_params(request)
    await gate(sim.faults, sim.clock, request, "list")
    thread = sim.assistants.thread(thread_id)
    sim.assistants.active_run(thread)  # brings the newest run (and its reply) up to date
    messages = thread.messages
    run_id = request.query_params.get("run_id")
    if run_id is not None:
        messages = [m for m in messages if m.run_id == run_id]
    page, more = paginate(messages, params, lambda m: m.id)
    return _json(list_body([m.to_api() for m in page], more))


@router.get("/threads/{thread_id}/messages/{message_id}")
async def retrieve_message(thread_id: str, message_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    thread = sim.assistants.thread(thread_id)
    sim.assistants.active_run(thread)
    for message in thread.messages:
        if message.id == message_id:
            return _json(message.to_api())
    raise not_found("message", message_id)


# -- runs ---------------------------------------------------------------------------------


def _run_settings(body: Body) -> dict[str, Any]:
    """The run fields a create request may set; None means "the assistant's"."""
    tools = body.array("tools")
    settings: dict[str, Any] = {
        "metadata": body.metadata(),
        "model": body.string("model"),
        "instructions": body.string("instructions"),
        "tools": None if tools is None else function_tools(tools, "tools"),
        "temperature": _or_default(body.number("temperature"), 1.0),
        "top_p": _or_default(body.number("top_p"), 1.0),
        "max_prompt_tokens": body.integer("max_prompt_tokens"),
        "max_completion_tokens": body.integer("max_completion_tokens"),
        "truncation_strategy": body.obj("truncation_strategy"),
        "tool_choice": body.raw("tool_choice") or "auto",
        "parallel_tool_calls": _or_default(body.boolean("parallel_tool_calls"), True),
        "response_format": body.raw("response_format") or "auto",
    }
    settings["additional_instructions"] = body.string("additional_instructions")
    return settings


def _start_run(
    sim: SimState,
    thread: Thread,
    body: Body,
    additional: list[dict[str, Any]],
    lost: str | None,
) -> Run:
    assistant_id = body.string("assistant_id", required=True)
    assert assistant_id is not None
    assistant = sim.assistants.assistant(assistant_id)
    settings = _run_settings(body)
    extra = settings.pop("additional_instructions")
    if extra:
        base = settings["instructions"] or assistant.instructions or ""
        settings["instructions"] = f"{base}\n{extra}".strip()
    run = sim.assistants.create_run(thread, assistant, settings, additional)
    sim.records.created(
        CreateRecord(
            api="assistants",
            id=run.id,
            container_id=thread.id,
            metadata=dict(run.metadata),
            our_run_id=run.metadata.get(sim.config.run_id_key),
            created_at=run.created_at,
            response_lost=lost,
        )
    )
    return run


def _run_response(sim: SimState, run: Run) -> JSONResponse:
    return _json(
        run.to_api(), headers={"openai-poll-after-ms": str(sim.config.timing.poll_after_ms)}
    )


@router.post("/threads/{thread_id}/runs", response_model=None)
async def create_run(thread_id: str, request: Request) -> JSONResponse | StreamingResponse:
    """The run; with ``stream: true`` its event stream until the model stops working
    (run_streams.py)."""
    sim = sim_of(request)
    body = Body(await read_json_object(request), RUN_FIELDS)
    decision = await gate(sim.faults, sim.clock, request, "create")
    thread = sim.assistants.thread(thread_id)
    additional = [
        sim.assistants.parse_message(m, f"additional_messages[{i}]")
        for i, m in enumerate(body.array("additional_messages") or [])
    ]
    run = _start_run(sim, thread, body, additional, decision.lost)
    if body.boolean("stream"):
        return _streamed(run_streams.follow(sim, thread, run, run_streams.opened(run), "create"))
    return _run_response(sim, run)


def _streamed(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


@router.post("/threads/runs", response_model=None)
async def create_thread_and_run(request: Request) -> JSONResponse | StreamingResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), THREAD_AND_RUN_FIELDS)
    decision = await gate(sim.faults, sim.clock, request, "create")
    thread_data = body.obj("thread") or {}
    thread_body = Body(thread_data, THREAD_FIELDS, prefix="thread.")
    sim.assistants.assistant(body.string("assistant_id", required=True) or "")
    thread = _new_thread(sim, thread_body)
    run = _start_run(sim, thread, body, [], decision.lost)
    if body.boolean("stream"):
        opening = [frame("thread.created", thread.to_api()), *run_streams.opened(run)]
        return _streamed(run_streams.follow(sim, thread, run, opening, "create"))
    return _run_response(sim, run)


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    params = page_params(request)
    await gate(sim.faults, sim.clock, request, "list")
    thread = sim.assistants.thread(thread_id)
    now = sim.clock.now()
    for run in thread.runs:
        sim.assistants.engine.advance(thread, run, now)
    page, more = paginate(thread.runs, params, lambda r: r.id)
    return _json(list_body([r.to_api() for r in page], more))


@router.get("/threads/{thread_id}/runs/{run_id}")
async def retrieve_run(thread_id: str, run_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    _, run = sim.assistants.run(thread_id, run_id)
    return _run_response(sim, run)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(thread_id: str, run_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "cancel")
    _, run = sim.assistants.run(thread_id, run_id)
    sim.assistants.engine.cancel(run, sim.clock.now())
    return _run_response(sim, run)


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", response_model=None)
async def submit_tool_outputs(
    thread_id: str, run_id: str, request: Request
) -> JSONResponse | StreamingResponse:
    """Outputs for the waiting step, all at once; with ``stream: true`` the run's event
    stream from there until the model stops working (run_streams.py)."""
    sim = sim_of(request)
    data = await read_json_object(request)
    given = _given_ids(data)
    step_id: str | None = None
    lost: str | None = None

    def record(accepted: bool, status: int, reason: str | None) -> None:
        sim.records.submitted(
            api="assistants",
            run_id=run_id,
            container_id=thread_id,
            step_id=step_id,
            tool_call_ids=given,
            accepted=accepted,
            reason=reason,
            status_code=status,
            at=sim.clock.now(),
            response_lost=lost,
        )

    try:
        lost = (await gate(sim.faults, sim.clock, request, "submit")).lost
        thread, run = sim.assistants.run(thread_id, run_id)
        tool_steps = [s for s in run.steps if s.type == "tool_calls"]
        step_id = tool_steps[-1].id if tool_steps else None
        body = Body(data, ("tool_outputs", "stream"))
        outputs = _outputs(body.array("tool_outputs", required=True) or [])
        answered = sim.assistants.engine.submit(run, outputs, sim.clock.now())
    except ApiError as exc:
        record(False, exc.status, exc.message)
        raise
    record(True, 200, None)
    if body.boolean("stream"):
        opening = run_streams.answered(run, answered)
        return _streamed(run_streams.follow(sim, thread, run, opening, "submit"))
    return _run_response(sim, run)


def _given_ids(data: dict[str, Any]) -> list[str]:
    outputs = data.get("tool_outputs")
    if not isinstance(outputs, list):
        return []
    return [str(o.get("tool_call_id")) for o in outputs if isinstance(o, dict)]


def _outputs(items: list[Any]) -> list[tuple[str, str]]:
    outputs: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        param = f"tool_outputs[{index}]"
        if not isinstance(item, dict):
            raise invalid_type(param, "an object", item)
        body = Body(item, ("tool_call_id", "output"), prefix=f"{param}.")
        call_id = body.string("tool_call_id", required=True)
        output = body.string("output")
        assert call_id is not None
        outputs.append((call_id, output or ""))
    return outputs


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(thread_id: str, run_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    params = page_params(request)
    await gate(sim.faults, sim.clock, request, "list")
    _, run = sim.assistants.run(thread_id, run_id)
    page, more = paginate(run.steps, params, lambda s: s.id)
    return _json(list_body([s.to_api() for s in page], more))


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, request: Request
) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    _, run = sim.assistants.run(thread_id, run_id)
    for step in run.steps:
        if step.id == step_id:
            return _json(step.to_api())
    raise not_found("run step", step_id)


def _or_default(value: T | None, default: T) -> T:
    return default if value is None else value
