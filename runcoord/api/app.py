"""The agent API (FastAPI). Every route but health and the provider webhook needs a tenant's
API key (``Authorization: Bearer rk_…``); a run or thread of another tenant answers 404,
exactly like one that does not exist."""

# No `from __future__ import annotations` here: FastAPI reads the routes' Annotated
# dependencies at runtime, and they name aliases local to create_app.

import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, Field, StringConstraints, field_validator
from starlette.concurrency import run_in_threadpool

from runcoord import metrics, tracing
from runcoord.api import (
    approval_routes,
    cancels,
    console,
    events,
    hook_routes,
    keys,
    limits,
    runs,
    tenants,
    threads,
    turns,
    webhooks,
)
from runcoord.api.problems import Problem
from runcoord.codec import AvroCodec
from runcoord.config import Settings
from runcoord.effects.ledger.redis_guard import RedisGuard, connect_redis
from runcoord.errors import ConfigError
from runcoord.kafka import TopicNames
from runcoord.provider.port import run_metadata
from runcoord.providers import ProviderChoice, load_choice

# Ids we mint or the provider mints; anything else cannot name a run or thread of ours.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_DEFAULTS = {name: f.default for name, f in Settings.model_fields.items()}
DEFAULT_PROVIDER_URL: str = _DEFAULTS["provider_url"]
DEFAULT_REDIS_URL = f"redis://127.0.0.1:{_DEFAULTS['redis_port']}/0"  # the local stack's

# A turn's metadata goes on the provider's run next to the adapters' own keys (run_metadata in
# runcoord/provider/port.py: the run id, and on Responses the step), within the provider's
# limits (OpenAI: 16 pairs, keys up to 64 characters, values up to 512). A turn gets the pairs
# the adapters leave, and none of their keys: a caller's value there would be overwritten.
PROVIDER_METADATA_PAIRS = 16
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
OUR_METADATA_KEYS = tuple(run_metadata({}, "run", "step"))
METADATA_PAIRS = PROVIDER_METADATA_PAIRS - len(OUR_METADATA_KEYS)
RESERVED_PREFIX = "runcoord_"  # every key of ours starts with it, and future ones will

# PostgreSQL's text and jsonb cannot hold a NUL character: refused up front (422) rather than
# failing the insert (500). In the schema, so generated clients and tests keep to it.
NO_NUL = r"^[^\x00]*$"

# When a tenant's stream slots are all taken there is no telling when one frees.
STREAM_RETRY_AFTER_S = 5


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
    # Limits (see runcoord/api/limits.py and the RUNCOORD_API_* settings).
    redis_url: str = DEFAULT_REDIS_URL
    rate_per_s: float = _DEFAULTS["api_rate_per_s"]
    rate_burst: int = _DEFAULTS["api_rate_burst"]
    streams_per_tenant: int = _DEFAULTS["api_streams_per_tenant"]
    db_pool_min: int = _DEFAULTS["api_db_pool_min"]
    db_pool_max: int = _DEFAULTS["api_db_pool_max"]
    db_pool_timeout_s: float = _DEFAULTS["api_db_pool_timeout_s"]
    max_body_bytes: int = limits.MAX_BODY_BYTES
    max_webhook_body_bytes: int = limits.MAX_WEBHOOK_BODY_BYTES
    max_start_run_bytes: int = turns.MAX_START_RUN_BYTES
    # How often an open event stream checks that its key is still valid (and renews its slot).
    key_recheck_s: float = 5.0
    # Outbound webhooks to private, loopback or link-local addresses (runcoord/api/hooks.py).
    webhooks_allow_private: bool = False
    # The console (/console): where replay reports are found, and the tool registry its run
    # stories are told with (None: without it).
    replays_dir: pathlib.Path | None = None
    tools_file: pathlib.Path | None = None

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
        redis_url=settings.redis,
        rate_per_s=settings.api_rate_per_s,
        rate_burst=settings.api_rate_burst,
        streams_per_tenant=settings.api_streams_per_tenant,
        db_pool_min=settings.api_db_pool_min,
        db_pool_max=settings.api_db_pool_max,
        db_pool_timeout_s=settings.api_db_pool_timeout_s,
        webhooks_allow_private=settings.webhooks_allow_private,
        replays_dir=settings.state_dir / "replays",
        tools_file=settings.tools_file,
    )


class TurnIn(BaseModel):
    input: str = Field(
        min_length=1, max_length=32_000, pattern=NO_NUL, description="The user's message."
    )
    assistant_id: str | None = Field(default=None, max_length=128, pattern=NO_NUL)
    provider: Literal["assistants", "responses"] | None = Field(
        default=None,
        description="The run protocol; absent: providers.yaml's for the assistant (auto: "
        "responses for OpenAI's own base URL, assistants for any other).",
    )
    metadata: dict[
        Annotated[
            str, StringConstraints(min_length=1, max_length=METADATA_KEY_CHARS, pattern=NO_NUL)
        ],
        Annotated[str, Field(max_length=METADATA_VALUE_CHARS, pattern=NO_NUL)],
    ] = Field(
        default_factory=dict,
        max_length=METADATA_PAIRS,
        description=f"Passed to the provider's run as its metadata, next to runcoord's own "
        f"keys ({', '.join(OUR_METADATA_KEYS)}): at most {METADATA_PAIRS} pairs, keys up to "
        f"{METADATA_KEY_CHARS} characters not starting with {RESERVED_PREFIX}, values up to "
        f"{METADATA_VALUE_CHARS}.",
    )

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_leaves_room_for_ours(cls, value: Any) -> Any:
        """Clear messages for what the schema alone would word obscurely."""
        if not isinstance(value, dict):
            return value
        if len(value) > METADATA_PAIRS:
            raise ValueError(
                f"metadata: at most {METADATA_PAIRS} pairs, not {len(value)} (the provider "
                f"takes {PROVIDER_METADATA_PAIRS} and runcoord adds up to "
                f"{len(OUR_METADATA_KEYS)} of its own: {', '.join(OUR_METADATA_KEYS)})"
            )
        reserved = sorted(
            k
            for k in value
            if isinstance(k, str) and (k in OUR_METADATA_KEYS or k.startswith(RESERVED_PREFIX))
        )
        if reserved:
            raise ValueError(
                f"metadata keys {reserved} are reserved: keys starting with "
                f"{RESERVED_PREFIX!r} are runcoord's own"
            )
        return value


class TurnOut(BaseModel):
    run_id: str
    thread_id: str
    replayed: bool = Field(description="True when this Idempotency-Key was seen before.")


class ThreadIn(BaseModel):
    thread_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Your own conversation id; absent: one is minted (thr_…).",
    )
    metadata: dict[
        Annotated[str, StringConstraints(pattern=NO_NUL)],
        Annotated[str, Field(max_length=512, pattern=NO_NUL)],
    ] = Field(default_factory=dict, max_length=16)


class ProviderThreadOut(BaseModel):
    protocol: Literal["assistants", "responses"]
    state: str = Field(description="claimed (being created), succeeded, failed or unknown.")
    id: str | None = Field(description="The provider's thread or conversation id.")
    error: str | None


class ThreadRunOut(BaseModel):
    run_id: str
    provider: str
    assistant_id: str
    created_at: str | None


class ThreadOut(BaseModel):
    thread_id: str
    metadata: dict[str, str]
    created_at: str | None
    provider_threads: list[ProviderThreadOut] = Field(
        description="Created by runcoord on the thread's first turn, once per protocol."
    )
    runs: list[ThreadRunOut] = Field(description="The newest 100, newest first.")


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


class CancelIn(BaseModel):
    reason: str = Field(
        default="cancelled by the client",
        min_length=1,
        max_length=cancels.MAX_REASON_CHARS,
        pattern=NO_NUL,
        description="Why; journaled with the run's CancelRequested.",
    )


class CancelOut(BaseModel):
    run_id: str
    reason: str
    replayed: bool = Field(description="True when this Idempotency-Key was seen before.")


class WebhookOut(BaseModel):
    handling: Literal["observation", "recorded"]
    reason: str | None
    run_id: str | None
    duplicate: bool


_bearer = HTTPBearer(auto_error=False, description="A tenant's API key: rk_…")
_BUSY: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "The request body is over the route's limit."},
    503: {"model": Problem, "description": "No database connection free in time; retry."},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key."},
    404: {"model": Problem, "description": "No such run or thread for this tenant."},
    429: {
        "model": Problem,
        "description": "Over the tenant's request rate (or its open event streams); "
        "Retry-After says when to try again.",
    },
    **_BUSY,
}
IdPath = Annotated[str, Path(pattern=ID_PATTERN)]
Conn = psycopg.Connection[tuple[Any, ...]]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def create_app(config: ApiConfig) -> FastAPI:
    codec = AvroCodec()
    verifier = webhooks.Verifier(config.webhook_secret) if config.webhook_secret else None
    # Every route's connection comes from here, checked before it is handed out (a database
    # restart leaves dead ones behind); opened with the app, closed at its shutdown.
    pool: ConnectionPool[Conn] = ConnectionPool(
        config.dsn,
        min_size=config.db_pool_min,
        max_size=max(config.db_pool_min, config.db_pool_max),
        timeout=config.db_pool_timeout_s,
        kwargs={"autocommit": True, "connect_timeout": 10},
        check=ConnectionPool.check_connection,
        name="runcoord-api",
        open=False,
    )
    redis = RedisGuard(connect_redis(config.redis_url))
    rates = limits.RateLimiter(redis, config.rate_per_s, config.rate_burst)
    slots = limits.StreamSlots(
        redis, config.streams_per_tenant, ttl_s=max(30.0, 4 * config.key_recheck_s)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.open()
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)
            redis.client.close()
            if verifier is not None:
                verifier.close()

    app = FastAPI(
        title="runcoord agent API",
        version="1",
        description="Turns in through a PostgreSQL outbox; runs and their events out.",
        lifespan=lifespan,
    )
    # Innermost of the three, so a refused body is still counted and traced.
    app.add_middleware(
        limits.BodyLimit,
        default=config.max_body_bytes,
        per_path={"/v1/webhooks/provider": config.max_webhook_body_bytes},
    )
    # A span per request (the child of a caller's traceparent); a turn's outbox row keeps it.
    tracing.instrument(app, exclude=("/healthz",))
    app.add_middleware(metrics.HttpMetrics)

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(_request: Request, exc: PoolTimeout) -> JSONResponse:
        return JSONResponse(
            {"detail": f"database busy: {exc}"}, status_code=503, headers={"Retry-After": "1"}
        )

    def db() -> Iterator[Conn]:
        with pool.connection() as conn:
            yield conn

    # Back in the pool as soon as the route returns, before its response is sent: an event
    # stream borrows one per poll instead of holding this one for as long as it is open.
    Db = Annotated[Conn, Depends(db, scope="function")]

    def caller(conn: Db, credentials: Credentials) -> keys.Key:
        found = keys.lookup(conn, credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(401, "missing or unknown API key", {"WWW-Authenticate": "Bearer"})
        wait = rates.wait_s(found.tenant)
        if wait is not None:
            raise HTTPException(
                429,
                "too many requests for this tenant",
                {"Retry-After": limits.retry_after(wait)},
            )
        return found

    def tenant(key: Annotated[keys.Key, Depends(caller)]) -> str:
        return key.tenant

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
            403: {"model": Problem, "description": "The assistant is not allowed for the tenant."},
            409: {"model": Problem, "description": "Idempotency-Key reused for another turn."},
            413: {
                "model": Problem,
                "description": "The request body, or the turn as a Kafka record, is over its "
                "limit.",
            },
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
        if assistant_id != config.assistant_id and not tenants.may_run(conn, who, assistant_id):
            # Another tenant's assistant (its instructions, its files) is not this tenant's.
            raise HTTPException(403, f"assistant {assistant_id!r} is not allowed for this tenant")
        turn = turns.Turn(
            tenant=who,
            thread_id=thread_id,
            input=body.input,
            assistant_id=assistant_id,
            provider=config.protocol_for(assistant_id, body.provider),
            metadata=body.metadata,
        )
        try:
            accepted = turns.accept(
                conn,
                turn,
                idempotency_key,
                config.topics.inbox,
                codec,
                max_bytes=config.max_start_run_bytes,
            )
        except turns.KeyReused as exc:
            raise HTTPException(409, "Idempotency-Key was used for another turn") from exc
        except turns.TurnTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        tracing.annotate(
            run_id=accepted.run_id, thread_id=accepted.thread_id, replayed=accepted.replayed
        )
        out = TurnOut(
            run_id=accepted.run_id, thread_id=accepted.thread_id, replayed=accepted.replayed
        )
        headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
        return JSONResponse(out.model_dump(), status_code=202, headers=headers)

    @app.post("/v1/threads", status_code=201, response_model=ThreadOut, responses=_ERRORS)
    def post_thread(body: ThreadIn, conn: Db, who: Tenant) -> ThreadOut:
        thread_id = body.thread_id or f"thr_{uuid.uuid4().hex}"
        if not turns.open_thread(conn, who, thread_id, body.metadata):
            raise HTTPException(409, f"thread {thread_id} exists")
        conn.commit()
        found = threads.get_thread(conn, who, thread_id)
        assert found is not None  # just written, in this tenant
        return ThreadOut(**found)

    @app.get("/v1/threads/{thread_id}", response_model=ThreadOut, responses=_ERRORS)
    def get_thread(thread_id: IdPath, conn: Db, who: Tenant) -> ThreadOut:
        found = threads.get_thread(conn, who, thread_id)
        if found is None:
            raise HTTPException(404, "no such thread")
        return ThreadOut(**found)

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
        credentials: Credentials,
        follow: bool = True,
        last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    ) -> StreamingResponse:
        if runs.get_run(conn, config.topics.events, who, run_id) is None:
            raise HTTPException(404, "no such run")
        assert credentials is not None  # `who` was found by it
        key = credentials.credentials
        permit = slots.acquire(who)
        if permit is None:
            raise HTTPException(
                429,
                f"this tenant has {config.streams_per_tenant} event streams open already",
                {"Retry-After": str(STREAM_RETRY_AFTER_S)},
            )

        def still_allowed() -> bool:
            """The key was not revoked since the stream opened (and the slot is kept)."""
            with pool.connection() as c:
                allowed = keys.tenant_for(c, key) == who
            if allowed:
                slots.renew(permit)
            return allowed

        body = events.stream(
            pool,
            config.bootstrap,
            config.topics,
            run_id,
            after_seq=last_event_id or 0,
            follow=follow,
            codec=codec,
            still_allowed=still_allowed,
            recheck_s=config.key_recheck_s,
            on_end=lambda: slots.release(permit),
        )
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.post(
        "/v1/runs/{run_id}/cancel",
        status_code=202,
        response_model=CancelOut,
        responses={
            **_ERRORS,
            200: {"model": CancelOut, "description": "This cancel was requested before."},
            409: {
                "model": Problem,
                "description": "The run is over, or the Idempotency-Key was used for another "
                "cancel.",
            },
        },
    )
    def post_cancel(
        run_id: IdPath,
        body: CancelIn,
        conn: Db,
        who: Annotated[keys.Key, Depends(caller)],
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=255,
                description="Retry with the same key and body: the cancel is sent once.",
            ),
        ],
    ) -> JSONResponse:
        found = runs.get_run(conn, config.topics.events, who.tenant, run_id)
        if found is None:
            raise HTTPException(404, "no such run")
        if found["finished_at"] is not None:
            # A retry of a cancel that was sent before the run ended is still its replay.
            done = cancels.earlier(conn, who.tenant, run_id, body.reason, idempotency_key)
            if done is None:
                raise HTTPException(409, f"run {run_id} is over ({found['status']})")
        else:
            done = cancels.request(
                conn,
                who,
                who.tenant,
                run_id,
                body.reason,
                idempotency_key,
                config.topics.inbox,
                codec,
            )
        tracing.annotate(run_id=run_id, outcome=done.outcome)
        if done.outcome == "key_reused":
            raise HTTPException(409, "Idempotency-Key was used for another cancel")
        replayed = done.outcome == "replayed"
        out = CancelOut(run_id=run_id, reason=done.reason, replayed=replayed)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(out.model_dump(), status_code=200 if replayed else 202, headers=headers)

    app.include_router(
        approval_routes.routes(
            journal=config.topics.events,
            inbox=config.topics.inbox,
            bootstrap=config.bootstrap,
            codec=codec,
            db=db,
            caller=caller,
            errors=_ERRORS,
        )
    )

    app.include_router(hook_routes.router(db, tenant, allow_private=config.webhooks_allow_private))
    app.include_router(
        console.router(
            console.ConsoleConfig(
                topics=config.topics,
                bootstrap=config.bootstrap,
                replays_dir=config.replays_dir,
                tools_file=config.tools_file,
            ),
            pool=pool,
            codec=codec,
        )
    )

    @app.post(
        "/v1/webhooks/provider",
        response_model=WebhookOut,
        responses={
            400: {"model": Problem, "description": "Bad or missing webhook signature."},
            413: _BUSY[413],
            503: {
                "model": Problem,
                "description": "No webhook secret is configured, or no database connection "
                "was free in time.",
            },
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
