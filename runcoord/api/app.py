"""The agent API (FastAPI). Every route but health and the provider webhook needs a tenant's
API key (``Authorization: Bearer rk_…``); a run or thread of another tenant answers 404,
exactly like one that does not exist."""

# No `from __future__ import annotations` here: FastAPI reads the routes' Annotated
# dependencies at runtime, and they name aliases local to create_app.

import pathlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from runcoord import metrics, tracing
from runcoord.api import events, keys, runs, turns, webhooks
from runcoord.codec import AvroCodec
from runcoord.config import Settings
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames
from runcoord.providers import ProviderChoice, load_choice

# Ids we mint or the provider mints; anything else cannot name a run or thread of ours.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_PROVIDER_URL: str = Settings.model_fields["provider_url"].default


@dataclass(frozen=True)
class ApiConfig:
    dsn: str
    bootstrap: str
    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    webhook_secret: str | None = None
    assistant_id: str = "asst_default"
    # A turn whose request names no provider gets the protocol providers.yaml (loaded once, at
    # startup) gives its assistant; `auto` decides by the provider's base URL.
    providers: ProviderChoice = field(default_factory=ProviderChoice)
    provider_url: str = DEFAULT_PROVIDER_URL

    def protocol_for(self, assistant_id: str, requested: str | None) -> str:
        """The request's own protocol, else providers.yaml's for the assistant, else auto."""
        return requested or self.providers.protocol_for(assistant_id, self.provider_url)


def config_from(
    settings: Settings,
    *,
    topics: TopicNames,
    webhook_secret: str | None = None,
    assistant_id: str = "asst_default",
    provider_url: str | None = None,
    providers_file: pathlib.Path | None = None,
) -> ApiConfig:
    """The API's configuration from the settings (an argument given here wins over its setting);
    a providers file or provider URL that cannot be used is a ConfigError naming it. Only the
    default providers file may be absent (then `auto` for every assistant)."""
    url = provider_url or settings.provider_url
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"provider URL {url!r}: expected http(s)://host[:port]/v1")
    path = providers_file or settings.providers_file
    if not path.exists() and (providers_file or "providers_file" in settings.model_fields_set):
        raise ConfigError(f"providers file {path}: no such file")  # named, so not optional
    return ApiConfig(
        dsn=settings.dsn,
        bootstrap=settings.bootstrap,
        topics=topics,
        webhook_secret=webhook_secret,
        assistant_id=assistant_id,
        providers=load_choice(path),
        provider_url=url,
    )


class TurnIn(BaseModel):
    input: str = Field(min_length=1, max_length=32_000, description="The user's message.")
    assistant_id: str | None = Field(default=None, max_length=128)
    provider: Literal["assistants", "responses"] | None = Field(
        default=None,
        description="The run protocol; absent: providers.yaml's for the assistant (auto: "
        "responses for OpenAI's own base URL, assistants for any other).",
    )
    # Passed to the provider run as its metadata (OpenAI allows 16 keys).
    metadata: dict[str, Annotated[str, Field(max_length=512)]] = Field(
        default_factory=dict, max_length=16
    )


class TurnOut(BaseModel):
    run_id: str
    thread_id: str
    replayed: bool = Field(description="True when this Idempotency-Key was seen before.")


class RunOut(BaseModel):
    run_id: str
    thread_id: str
    status: str = Field(description="pending, or the run's phase (queued, requires_action, …).")
    provider_status: str | None
    steps: int
    outcome: str | None
    accepted_at: str | None
    updated_at: str | None
    finished_at: str | None
    events: int


class WebhookOut(BaseModel):
    handling: Literal["observation", "recorded"]
    reason: str | None
    run_id: str | None
    duplicate: bool


class Problem(BaseModel):
    detail: str


_bearer = HTTPBearer(auto_error=False, description="A tenant's API key: rk_…")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key."},
    404: {"model": Problem, "description": "No such run or thread for this tenant."},
}
IdPath = Annotated[str, Path(pattern=ID_PATTERN)]


def create_app(config: ApiConfig) -> FastAPI:
    codec = AvroCodec()
    verifier = webhooks.Verifier(config.webhook_secret) if config.webhook_secret else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if verifier is not None:
            verifier.close()

    app = FastAPI(
        title="runcoord agent API",
        version="1",
        description="Turns in through a PostgreSQL outbox; runs and their events out.",
        lifespan=lifespan,
    )
    # A span per request (the child of a caller's traceparent); a turn's outbox row keeps it.
    tracing.instrument(app, exclude=("/healthz",))
    app.add_middleware(metrics.HttpMetrics)

    def db() -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with psycopg.connect(config.dsn, autocommit=True, connect_timeout=10) as conn:
            yield conn

    Db = Annotated[psycopg.Connection[tuple[Any, ...]], Depends(db)]

    def tenant(
        conn: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> str:
        found = keys.tenant_for(conn, credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(401, "missing or unknown API key", {"WWW-Authenticate": "Bearer"})
        return found

    Tenant = Annotated[str, Depends(tenant)]

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/threads/{thread_id}/turns",
        status_code=202,
        response_model=TurnOut,
        responses={
            **_ERRORS,
            409: {"model": Problem, "description": "Idempotency-Key reused for another turn."},
        },
    )
    def post_turn(
        thread_id: IdPath,
        body: TurnIn,
        conn: Db,
        who: Tenant,
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=255,
                description="Retry with the same key to get the same run, never a second one.",
            ),
        ],
    ) -> JSONResponse:
        assistant_id = body.assistant_id or config.assistant_id
        turn = turns.Turn(
            tenant=who,
            thread_id=thread_id,
            input=body.input,
            assistant_id=assistant_id,
            provider=config.protocol_for(assistant_id, body.provider),
            metadata=body.metadata,
        )
        try:
            accepted = turns.accept(conn, turn, idempotency_key, config.topics.inbox, codec)
        except turns.ThreadNotFound as exc:
            raise HTTPException(404, "no such thread") from exc
        except turns.KeyReused as exc:
            raise HTTPException(409, "Idempotency-Key was used for another turn") from exc
        tracing.annotate(
            run_id=accepted.run_id, thread_id=accepted.thread_id, replayed=accepted.replayed
        )
        out = TurnOut(
            run_id=accepted.run_id, thread_id=accepted.thread_id, replayed=accepted.replayed
        )
        headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
        return JSONResponse(out.model_dump(), status_code=202, headers=headers)

    @app.get("/v1/runs/{run_id}", response_model=RunOut, responses=_ERRORS)
    def get_run(run_id: IdPath, conn: Db, who: Tenant) -> RunOut:
        found = runs.get_run(conn, config.topics.events, who, run_id)
        if found is None:
            raise HTTPException(404, "no such run")
        return RunOut(**found)

    @app.get(
        "/v1/runs/{run_id}/events",
        responses={
            **_ERRORS,
            200: {
                "description": "Server-sent events, one per journal event, until the run ends.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
        response_class=StreamingResponse,
    )
    def get_events(
        run_id: IdPath,
        conn: Db,
        who: Tenant,
        follow: bool = True,
        last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    ) -> StreamingResponse:
        if runs.get_run(conn, config.topics.events, who, run_id) is None:
            raise HTTPException(404, "no such run")
        body = events.stream(
            config.dsn,
            config.bootstrap,
            config.topics,
            run_id,
            after_seq=last_event_id or 0,
            follow=follow,
            codec=codec,
        )
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.post(
        "/v1/webhooks/provider",
        response_model=WebhookOut,
        responses={
            400: {"model": Problem, "description": "Bad or missing webhook signature."},
            503: {"model": Problem, "description": "No webhook secret is configured."},
        },
    )
    async def provider_webhook(request: Request, conn: Db) -> WebhookOut:
        if verifier is None:
            raise HTTPException(503, "no webhook secret configured")
        body = await request.body()
        headers = dict(request.headers)
        try:
            event = verifier.verify(body, headers)
        except webhooks.BadSignature as exc:
            raise HTTPException(400, f"bad webhook signature: {exc}") from exc
        handled = await run_in_threadpool(
            webhooks.handle,
            conn,
            headers["webhook-id"],
            event,
            journal=config.topics.events,
            inbox=config.topics.inbox,
            codec=codec,
        )
        return WebhookOut(
            handling=handled.handling,  # type: ignore[arg-type]
            reason=handled.reason,
            run_id=handled.run_id,
            duplicate=handled.duplicate,
        )

    return app
