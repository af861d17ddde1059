"""The simulator's own API under /_sim (outside /v1): records, reset, faults, health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runcoord.sim.provider.errors import bad_request
from runcoord.sim.provider.faults import parse_faults
from runcoord.sim.provider.params import read_json_object
from runcoord.sim.provider.state import sim_of

router = APIRouter(prefix="/_sim")


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"ok": True})


@router.get("/records")
async def records(request: Request) -> JSONResponse:
    sim = sim_of(request)
    return JSONResponse(sim.records.to_json(sim.now_of))


@router.post("/reset")
async def reset(request: Request) -> JSONResponse:
    sim_of(request).reset()
    return JSONResponse({"ok": True})


@router.get("/faults")
async def get_faults(request: Request) -> JSONResponse:
    return JSONResponse(sim_of(request).faults.to_json())


@router.post("/faults")
async def set_faults(request: Request) -> JSONResponse:
    """Replace the faults in force (``{}`` turns them all off). Same shape as the config."""
    sim = sim_of(request)
    data = await read_json_object(request)
    try:
        config = parse_faults(data)
        seed = data.get("seed")
        sim.faults.set(config, seed=None if seed is None else int(seed))
    except (ValueError, TypeError) as exc:
        raise bad_request(str(exc)) from None
    return JSONResponse(sim.faults.to_json())
