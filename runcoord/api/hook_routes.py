"""The outbound webhook routes: ``/v1/webhooks`` (register, list, delete), mounted by
create_app with its own database and tenant dependencies. The logic is in hooks.py."""

# No `from __future__ import annotations` here: FastAPI reads the routes' Annotated
# dependencies at runtime, and they name aliases local to router().

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, Field, field_validator

from runcoord.api import hooks
from runcoord.api.problems import Problem

Conn = psycopg.Connection[tuple[Any, ...]]
EventType = Literal["approval.requested", "run.finished"]
HookIdPath = Annotated[str, Path(pattern=r"^hook_[A-Za-z0-9]{1,64}$")]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL's text cannot hold one: 422, not a failed insert


class HookIn(BaseModel):
    url: str = Field(
        min_length=1,
        max_length=hooks.MAX_URL_CHARS,
        pattern=NO_NUL,
        description="http(s) URL of your receiver; its host must resolve to public addresses "
        "only (checked now and at every delivery).",
    )
    events: list[EventType] = Field(min_length=1, max_length=len(hooks.EVENT_TYPES))
    description: str | None = Field(default=None, max_length=256, pattern=NO_NUL)

    @field_validator("events")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class HookOut(BaseModel):
    id: str
    url: str
    events: list[EventType]
    description: str | None
    created_at: str
    disabled_at: str | None = Field(description="Set when the receiver answered 410 Gone.")
    disabled_reason: str | None


class HookCreated(HookOut):
    secret: str = Field(
        description="whsec_…: deliveries are signed with it (Standard Webhooks: webhook-id, "
        "webhook-timestamp, webhook-signature). Shown only now."
    )


class HookRefused(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="Why the URL may not be called, or what in the body is invalid."
    )


_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key."},
    429: {"model": Problem, "description": "Over the tenant's request rate; see Retry-After."},
    503: {"model": Problem, "description": "No database connection free in time; retry."},
}


def router(
    db: Callable[[], Iterator[Conn]],
    tenant: Callable[..., str],
    *,
    allow_private: bool = False,
    resolve: hooks.Resolver = hooks.resolve_system,
) -> APIRouter:
    """The routes, on ``db`` (a pooled connection) and ``tenant`` (the API key's tenant)."""
    Db = Annotated[Conn, Depends(db, scope="function")]
    Tenant = Annotated[str, Depends(tenant)]
    routes = APIRouter()

    def out(hook: hooks.Hook) -> dict[str, Any]:
        return {
            "id": hook.id,
            "url": hook.url,
            "events": hook.events,
            "description": hook.description,
            "created_at": hook.created_at,
            "disabled_at": hook.disabled_at,
            "disabled_reason": hook.disabled_reason,
        }

    @routes.post(
        "/v1/webhooks",
        status_code=201,
        response_model=HookCreated,
        responses={
            **_AUTH,
            422: {
                "model": HookRefused,
                "description": "The URL may not be called (the reason says why), the tenant "
                f"has {hooks.MAX_HOOKS_PER_TENANT} webhooks already, or the body is invalid.",
            },
        },
    )
    def create_hook(body: HookIn, conn: Db, who: Tenant) -> HookCreated:
        try:
            hooks.check_url(body.url, allow_private=allow_private, resolve=resolve)
        except hooks.UnsafeUrl as exc:
            raise HTTPException(422, f"url refused: {exc}") from exc
        try:
            hook = hooks.create(conn, who, body.url, body.events, body.description)
        except hooks.TooManyHooks as exc:
            raise HTTPException(422, str(exc)) from exc
        assert hook.secret is not None
        return HookCreated(**out(hook), secret=hook.secret)

    @routes.get("/v1/webhooks", response_model=list[HookOut], responses=_AUTH)
    def list_hooks(conn: Db, who: Tenant) -> list[HookOut]:
        return [HookOut(**out(h)) for h in hooks.list_for(conn, who)]

    @routes.delete(
        "/v1/webhooks/{hook_id}",
        status_code=204,
        response_class=Response,
        responses={
            **_AUTH,
            404: {"model": Problem, "description": "No such webhook for this tenant."},
        },
    )
    def delete_hook(hook_id: HookIdPath, conn: Db, who: Tenant) -> Response:
        if not hooks.delete(conn, who, hook_id):
            raise HTTPException(404, "no such webhook")
        return Response(status_code=204)

    return routes
