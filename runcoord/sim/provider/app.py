"""Builds the simulated provider: the OpenAI-shaped API under /v1 and the admin API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request

from runcoord import tracing
from runcoord.sim.provider import admin, assistants, conversations, responses
from runcoord.sim.provider.clock import Clock, SystemClock
from runcoord.sim.provider.config import SimConfig
from runcoord.sim.provider.errors import ApiError, install_error_handlers
from runcoord.sim.provider.middleware import SimMiddleware, quiet_dropped_connections
from runcoord.sim.provider.state import SimState, sim_of


# async: FastAPI would run a plain def dependency in its thread pool, a hop per request.
async def require_api_key(request: Request) -> None:
    """Any bearer token is accepted; none at all is OpenAI's 401."""
    if not sim_of(request).config.require_api_key:
        return
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an"
            " Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )


def create_app(config: SimConfig | None = None, clock: Clock | None = None) -> FastAPI:
    app = FastAPI(title="runcoord simulated provider", docs_url=None, redoc_url=None)
    app.state.sim = SimState(config or SimConfig(), clock or SystemClock())
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
    v1.include_router(assistants.router)
    v1.include_router(responses.router)
    v1.include_router(conversations.router)
    app.include_router(v1)
    app.include_router(admin.router)
    install_error_handlers(app)
    app.add_middleware(SimMiddleware)
    tracing.instrument(app, exclude=("/_sim",))
    quiet_dropped_connections()
    return app
