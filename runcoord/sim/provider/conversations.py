"""The Conversations API under /v1: conversations and their items.

Adding ``function_call_output`` items here answers calls too (a submission in the records,
endpoint class ``submit``); a later response without a new user message continues the turn.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runcoord.sim.provider.errors import ApiError, bad_request
from runcoord.sim.provider.faults import gate
from runcoord.sim.provider.items import parse_input
from runcoord.sim.provider.paging import list_body, page_params, paginate
from runcoord.sim.provider.params import Body, read_json_object
from runcoord.sim.provider.responses import carries_outputs, record_submission
from runcoord.sim.provider.responses_store import OutputsMismatch
from runcoord.sim.provider.state import created_once, sim_of

router = APIRouter()


@router.post("/conversations")
async def create_conversation(request: Request) -> JSONResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), ("metadata", "items"))
    await gate(sim.faults, sim.clock, request, "other")
    metadata = body.metadata()
    sim.config.scripts.from_metadata(metadata, "metadata")  # a bad script is a 400 now
    items = parse_input(sim.ids, body.array("items"), "items")
    if len(items) > 20:
        raise _too_many(len(items))

    def create() -> tuple[str, dict[str, str]]:
        conversation = sim.responses.new_conversation(metadata, items)
        return conversation.id, conversation.metadata

    conversation_id, replayed = created_once(
        sim, "responses", request.headers.get("idempotency-key"), create
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(sim.responses.conversation(conversation_id).to_api(), headers=headers)


def _too_many(count: int) -> Exception:
    return bad_request(
        f"Invalid 'items': array too long. Expected an array with maximum length 20, but got an"
        f" array with length {count} instead.",
        param="items",
        code="array_above_max_length",
    )


@router.get("/conversations/{conversation_id}")
async def retrieve_conversation(conversation_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    return JSONResponse(sim.responses.conversation(conversation_id).to_api())


@router.post("/conversations/{conversation_id}")
async def update_conversation(conversation_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), ("metadata",))
    await gate(sim.faults, sim.clock, request, "other")
    conversation = sim.responses.conversation(conversation_id)
    metadata = body.metadata()
    sim.config.scripts.from_metadata(metadata, "metadata")  # a bad script is a 400 now
    conversation.metadata = metadata
    return JSONResponse(conversation.to_api())


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "other")
    sim.responses.conversation(conversation_id)
    del sim.responses.conversations[conversation_id]
    return JSONResponse({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


@router.post("/conversations/{conversation_id}/items")
async def create_items(conversation_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    body = Body(await read_json_object(request), ("items",))
    raw_items = body.array("items", required=True)
    decision = await gate(
        sim.faults, sim.clock, request, "submit" if carries_outputs(raw_items) else "other"
    )
    conversation = sim.responses.conversation(conversation_id)
    items = parse_input(sim.ids, raw_items, "items")
    if len(items) > 20:
        raise _too_many(len(items))
    try:
        plan = sim.responses.add_items(conversation, items)
    except OutputsMismatch as exc:
        step = sim.responses.asking_step(None, conversation)
        if step is not None:
            given = [i["call_id"] for i in items if i["type"] == "function_call_output"]
            record_submission(sim, step, given, conversation, decision.lost, exc)
        raise
    if plan.step is not None:
        record_submission(sim, plan.step, plan.answered, conversation, decision.lost)
    return JSONResponse(list_body(items, False))


@router.get("/conversations/{conversation_id}/items")
async def list_items(conversation_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    params = page_params(request)
    await gate(sim.faults, sim.clock, request, "list")
    conversation = sim.responses.conversation(conversation_id)
    page, more = paginate(conversation.items, params, lambda item: str(item["id"]))
    return JSONResponse(list_body(page, more))


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str, request: Request) -> JSONResponse:
    sim = sim_of(request)
    await gate(sim.faults, sim.clock, request, "retrieve")
    conversation = sim.responses.conversation(conversation_id)
    for item in conversation.items:
        if item["id"] == item_id:
            return JSONResponse(item)
    raise ApiError(404, f"Item with id '{item_id}' not found.")
