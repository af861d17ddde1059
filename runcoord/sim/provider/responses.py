"""The Responses API under /v1: create (background or not), retrieve (or stream the events
of a background response), cancel, input items.

A create carrying ``function_call_output`` items is a submission (endpoint class
``submit`` for the fault knobs, a row in the records' submissions); any other create is a
``create``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from runcoord.sim.provider import streams
from runcoord.sim.provider.errors import ApiError, bad_request
from runcoord.sim.provider.faults import gate
from runcoord.sim.provider.items import Item, parse_input
from runcoord.sim.provider.paging import list_body, page_params, paginate
from runcoord.sim.provider.params import (
    Body,
    check_function_name,
    invalid_type,
    query_flag,
    query_int,
    read_json_object,
)
from runcoord.sim.provider.records import CreateRecord
from runcoord.sim.provider.responses_model import Conversation, Response
from runcoord.sim.provider.responses_store import OutputsMismatch, Plan
from runcoord.sim.provider.state import SimState, sim_of

CREATE_FIELDS = (
    "background", "context_management", "conversation", "include", "input", "instructions",
    "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
    "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier",
    "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice",
    "tools", "top_logprobs", "top_p", "truncation", "user",
)  # fmt: skip

router = APIRouter()


def carries_outputs(value: object) -> bool:
    return isinstance(value, list) and any(
        isinstance(item, dict) and item.get("type") == "function_call_output" for item in value
    )


def _tools(value: list[Any] | None) -> list[dict[str, Any]]:
    """Function tools as the Response echoes them; other tool types pass through."""
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value or []):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid_type(where, "an object", tool)
        if tool.get("type") != "function":
            tools.append(tool)
            continue
        tools.append(
            {
                "type": "function",
                "name": check_function_name(tool.get("name"), f"{where}.name"),
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
                "strict": tool.get("strict", True),
            }
        )
    return tools


def _settings(body: Body) -> dict[str, Any]:
    """The request fields a Response echoes, with OpenAI's defaults."""

    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    return {
        "instructions": body.string("instructions"),
        "max_output_tokens": body.integer("max_output_tokens"),
        "max_tool_calls": body.integer("max_tool_calls"),
        "parallel_tool_calls": given(body.boolean("parallel_tool_calls"), True),
        "prompt_cache_key": body.string("prompt_cache_key"),
        "reasoning": given(body.obj("reasoning"), {"effort": None, "summary": None}),
        "safety_identifier": body.string("safety_identifier"),
        "service_tier": given(body.string("service_tier"), "default"),
        "store": given(body.boolean("store"), True),
        "temperature": given(body.number("temperature"), 1.0),
        "text": given(body.obj("text"), {"format": {"type": "text"}, "verbosity": "medium"}),
        "tool_choice": given(body.raw("tool_choice"), "auto"),
        "tools": _tools(body.array("tools")),
        "top_logprobs": given(body.integer("top_logprobs"), 0),
        "top_p": given(body.number("top_p"), 1.0),
        "truncation": given(body.string("truncation"), "disabled"),
    }


def _conversation_id(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    raise invalid_type("conversation", "a string or an object with an id", value)


@router.post("/responses", response_model=None)
async def create_response(request: Request) -> JSONResponse | StreamingResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), CREATE_FIELDS)
    is_submission = carries_outputs(body.raw("input"))
    decision = await gate(sim.faults, sim.clock, request, "submit" if is_submission else "create")
    model = body.string("model", required=True)
    assert model is not None
    streamed = bool(body.boolean("stream"))
    if streamed and not body.boolean("background"):
        raise bad_request(
            "The simulated provider streams only background responses; create the response"
            " with 'background': true, or without 'stream'.",
            param="stream",
            code="unsupported_value",
        )
    conversation_id = _conversation_id(body.raw("conversation"))
    previous_id = body.string("previous_response_id")
    if conversation_id is not None and previous_id is not None:
        raise bad_request(
            "Mutually exclusive parameters: Ensure you are only providing one of:"
            " 'previous_response_id' or 'conversation'.",
            code="mutually_exclusive_parameters",
        )
    store = sim.responses
    metadata = body.metadata()
    settings = _settings(body)
    items = parse_input(sim.ids, body.raw("input"))
    previous = store.previous(previous_id) if previous_id is not None else None
    conversation = store.conversation(conversation_id) if conversation_id is not None else None
    try:
        plan = store.plan(items, previous, conversation)
    except OutputsMismatch as exc:
        _record_rejected(sim, exc, items, previous, conversation, decision.lost)
        raise
    response = store.create(
        model=model,
        settings=settings,
        metadata=metadata,
        background=bool(body.boolean("background")),
        input_items=items,
        previous=previous,
        conversation=conversation,
        plan=plan,
    )
    _record_created(sim, response, plan, decision.lost)
    if streamed:
        return StreamingResponse(
            streams.stream(sim, response, None, "submit" if is_submission else "create"),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    if not response.background:
        # A foreground create answers once the model is done; other requests go on meanwhile.
        await sim.clock.sleep(max(0.0, store.finish_at(response) - sim.clock.now()))
        store.advance(response)
    return JSONResponse(response.to_api())


def _record_created(sim: SimState, response: Response, plan: Plan, lost: str | None) -> None:
    sim.records.created(
        CreateRecord(
            api="responses",
            id=response.id,
            container_id=None if response.conversation is None else response.conversation.id,
            metadata=dict(response.metadata),
            our_run_id=response.metadata.get(sim.config.run_id_key),
            created_at=response.created_at,
            follow_up=plan.step is not None,
            response_lost=lost,
        )
    )
    if plan.step is not None and plan.answered:
        # (Outputs added earlier as conversation items were recorded as the submission.)
        record_submission(sim, plan.step, plan.answered, response.conversation, lost)


def record_submission(
    sim: SimState,
    step: Response,
    answered: list[str],
    conversation: Conversation | None,
    lost: str | None,
    error: ApiError | None = None,
) -> None:
    sim.records.submitted(
        api="responses",
        run_id=step.turn_id,
        container_id=None if conversation is None else conversation.id,
        step_id=step.id,
        tool_call_ids=answered,
        accepted=error is None,
        reason=None if error is None else error.message,
        status_code=200 if error is None else error.status,
        at=sim.clock.now(),
        response_lost=lost,
    )


def _record_rejected(
    sim: SimState,
    exc: ApiError,
    items: list[Item],
    previous: Response | None,
    conversation: Conversation | None,
    lost: str | None,
) -> None:
    step = sim.responses.asking_step(previous, conversation)
    given = [i["call_id"] for i in items if i["type"] == "function_call_output"]
    sim.records.submitted(
        api="responses",
        run_id=step.turn_id if step is not None else "",
        container_id=None if conversation is None else conversation.id,
        step_id=None if step is None else step.id,
        tool_call_ids=given,
        accepted=False,
        reason=exc.message,
        status_code=exc.status,
        at=sim.clock.now(),
        response_lost=lost,
    )


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(response_id: str, request: Request) -> JSONResponse | StreamingResponse:
    """The response; with ``stream=true`` its event stream (streams.py), from the start or
    after ``starting_after``. Only background responses stream."""
    sim = sim_of(request)
    wants_stream = query_flag(request, "stream")
    after = query_int(request, "starting_after")
    decision = await gate(sim.faults, sim.clock, request, "retrieve")
    response = sim.responses.response(response_id)
    if not wants_stream or decision.lost == "500":
        # (A lost stream answer is lost like any other: the middleware answers 500.)
        hint = {"openai-poll-after-ms": str(sim.config.timing.poll_after_ms)}
        return JSONResponse(response.to_api(), headers=hint)
    if not response.background:
        raise bad_request(
            "Only responses created with background=true can be streamed.",
            param="stream",
            code="unsupported_value",
        )
    return StreamingResponse(
        streams.stream(sim, response, after),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "cancel")
    response = sim.responses.response(response_id)
    sim.responses.cancel(response)
    return JSONResponse(response.to_api())


@router.get("/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    params = page_params(request)
    await gate(sim.faults, sim.clock, request, "list")
    response = sim.responses.response(response_id)
    page, more = paginate(response.input_items, params, lambda item: str(item["id"]))
    return JSONResponse(list_body(page, more))
