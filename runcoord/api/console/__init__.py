"""The web console (/console): a person's view of runs, served by the agent API.

Signed in with an API key (a session cookie from then on; see sessions.py): a tenant's key
sees that tenant's runs, an operator key every tenant's. Another tenant's run by URL is the
same 404 page as a missing one. Pages are rendered here (pages.py); the only script follows a
live run through this module's event stream. Every POST carries the session's CSRF token and
its form's own Idempotency-Key; cancels and decisions go through the same code as the API's.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' Annotated
# dependencies at runtime, and they name aliases local to router().

import logging
import pathlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from psycopg_pool import ConnectionPool

from runcoord.api import approvals, cancels
from runcoord.api.console import pages, queries, sessions
from runcoord.api.keys import APPROVER
from runcoord.codec import AvroCodec
from runcoord.domain import events as ev
from runcoord.domain.ids import payload_hash
from runcoord.errors import ConfigError, RuncoordError
from runcoord.forensics.gather import gather
from runcoord.forensics.reader import PositionReader
from runcoord.forensics.timeline import Story, build_story
from runcoord.kafka import TopicNames
from runcoord.registry import Registry, load_registry

__all__ = ["ConsoleConfig", "router"]

log = logging.getLogger(__name__)

RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"  # the API's ID_PATTERN
APPROVAL_ID = r"^apr_[0-9a-f]{32}$"
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
REPORT_TYPES = {".html", ".png", ".svg", ".css", ".json", ".txt"}
# Pages load nothing from elsewhere and run no inline code; nothing may frame them.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# A replay report is shown as a document, never as a page of the console: no scripts, its
# own origin.
REPORT_CSP = "sandbox; default-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
LIVE_POLL_S = 0.5
LIVE_MAX_S = 600.0  # the browser's EventSource reconnects after
KEEPALIVE_EVERY = 20  # polls


@dataclass(frozen=True)
class ConsoleConfig:
    topics: TopicNames
    bootstrap: str
    replays_dir: pathlib.Path | None = None
    tools_file: pathlib.Path | None = None


def _headers(csp: str = CSP) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_headers())


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_headers())


def _registry(path: pathlib.Path | None) -> Registry | None:
    if path is None:
        return None
    try:
        return load_registry(path)
    except ConfigError as exc:
        log.warning("console: telling run stories without the tool registry: %s", exc)
        return None


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


Form = Annotated[dict[str, str], Depends(_form)]


def router(config: ConsoleConfig, *, pool: ConnectionPool[Any], codec: AvroCodec) -> APIRouter:
    """The console's routes, on the API's connection pool; none is in the OpenAPI document."""
    routes = APIRouter(prefix="/console", include_in_schema=False)
    journal = config.topics.events
    registry = _registry(config.tools_file)

    def db() -> Iterator[Any]:
        with pool.connection() as conn:
            yield conn

    Db = Annotated[Any, Depends(db, scope="function")]
    RunId = Annotated[str, Path(pattern=RUN_ID)]

    def session(request: Request, conn: Db) -> sessions.Session | None:
        return sessions.find(conn, request.cookies.get(sessions.COOKIE))

    Maybe = Annotated[sessions.Session | None, Depends(session)]

    def signed_in(found: Maybe) -> sessions.Session:
        if found is None:
            raise HTTPException(303, "sign in", {"Location": "/console/sign-in"})
        return found

    Signed = Annotated[sessions.Session, Depends(signed_in)]

    def posted(found: Signed, form: Form) -> sessions.Session:
        """A signed-in POST carrying the session's CSRF token; refused otherwise."""
        if not found.csrf_ok(form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")
        return found

    Posted = Annotated[sessions.Session, Depends(posted)]

    def scope(s: sessions.Session) -> str | None:
        return None if s.key.operator else s.key.tenant

    def who(s: sessions.Session) -> str:
        role = f", {s.key.role}" if s.key.role else ""
        return f"{s.key.name or s.key.key_id} ({s.key.tenant}{role})"

    def story_of(conn: Any, run_id: str) -> tuple[Story | None, dict[str, str]]:
        """The run's story and its calls' argument hashes; None while it is not readable."""
        try:
            with PositionReader(config.bootstrap) as reader:
                facts = gather(conn, reader, config.topics, run_id, codec=codec, registry=registry)
        except RuncoordError as exc:
            log.warning("console: run %s: story not read: %s", run_id, exc)
            return None, {}
        if facts is None:
            return None, {}
        hashes = {
            c.id: payload_hash(c.arguments)
            for e in facts.events
            if isinstance(e.event, ev.StepOpened)
            for c in e.event.calls
        }
        return build_story(facts), hashes

    def live_part(conn: Any, s: sessions.Session, head: queries.RunHead) -> str:
        story, hashes = story_of(conn, head.run_id) if head.projected else (None, {})
        return pages.run_live(
            head,
            story,
            approvals.for_run(conn, journal, head.run_id),
            hashes,
            may_decide=s.key.role == APPROVER and s.key.tenant == head.tenant,
            csrf=s.csrf,
        )

    @routes.get("")
    def home() -> RedirectResponse:
        return _see("/console/runs")

    @routes.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        text = resources.files(__name__).joinpath(name).read_text()
        return Response(text, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    @routes.get("/sign-in")
    def sign_in_page() -> HTMLResponse:
        return _html(pages.sign_in())

    @routes.post("/sign-in")
    def sign_in(request: Request, conn: Db, form: Form) -> Response:
        token = sessions.open_session(conn, form.get("key", "").strip())
        if token is None:
            return _html(pages.sign_in("That key is not a valid API key."), 401)
        answer = _see("/console/runs")
        answer.set_cookie(
            sessions.COOKIE,
            token,
            max_age=sessions.TTL_S,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return answer

    @routes.post("/sign-out")
    def sign_out(request: Request, conn: Db, _s: Posted) -> Response:
        sessions.close(conn, request.cookies.get(sessions.COOKIE))
        answer = _see("/console/sign-in")
        answer.delete_cookie(sessions.COOKIE, path="/console")
        return answer

    @routes.get("/runs")
    def run_list(
        conn: Db,
        s: Signed,
        status: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
        tool: str | None = None,
        q: str | None = None,
    ) -> HTMLResponse:
        mine = scope(s)
        f = queries.Filters(
            tenant=mine if mine is not None else (tenant or None),
            status=status or None,
            since=_since(since),
            tool=(tool or "").strip() or None,
            search=(q or "").strip() or None,
        )
        tenants = []
        if mine is None:
            rows = conn.execute(
                "SELECT DISTINCT tenant FROM forensics_runs WHERE journal = %s "
                "ORDER BY tenant LIMIT 500",
                (journal,),
            ).fetchall()
            tenants = [str(r[0]) for r in rows]
        page = pages.runs_page(
            queries.list_runs(conn, journal, f),
            queries.counts(conn, journal, f),
            f,
            operator=mine is None,
            tenants=tenants,
            who=who(s),
            csrf=s.csrf,
        )
        return _html(page)

    def visible(conn: Any, s: sessions.Session, run_id: str) -> queries.RunHead:
        head = queries.find_run(conn, journal, run_id, scope(s))
        if head is None:
            raise HTTPException(404, "no such run")
        return head

    @routes.get("/runs/{run_id}")
    def run_page(run_id: RunId, conn: Db, s: Signed, notice: str | None = None) -> HTMLResponse:
        head = queries.find_run(conn, journal, run_id, scope(s))
        if head is None:
            return _html(pages.not_found(who(s), s.csrf), 404)
        live = live_part(conn, s, head)
        return _html(pages.run_page(head, live, notice=notice, who=who(s), csrf=s.csrf))

    @routes.get("/runs/{run_id}/fragment")
    def run_fragment(run_id: RunId, conn: Db, found: Maybe) -> HTMLResponse:
        if found is None:
            raise HTTPException(401, "signed out")
        return _html(live_part(conn, found, visible(conn, found, run_id)))

    @routes.get("/runs/{run_id}/live")
    def run_live(run_id: RunId, conn: Db, found: Maybe) -> StreamingResponse:
        if found is None:
            raise HTTPException(401, "signed out")
        visible(conn, found, run_id)

        def version() -> tuple[Any, ...] | None:
            with pool.connection() as c:
                return queries.version(c, journal, run_id)

        async def changes() -> AsyncIterator[str]:
            """``changed`` whenever the run's story would read differently (and once at the
            start: the page may have been rendered before), ``finished`` at its end. Async, as
            the API's own event stream: between polls a watching page holds no worker thread
            (each poll borrows one for its query)."""
            last: tuple[Any, ...] | None = None
            quiet = 0
            ends = time.monotonic() + LIVE_MAX_S
            while time.monotonic() < ends:
                now = await anyio.to_thread.run_sync(version)
                if now != last:
                    last, quiet = now, 0
                    if now and now[-1]:
                        yield "event: finished\ndata: {}\n\n"
                        return
                    yield "event: changed\ndata: {}\n\n"
                else:
                    quiet += 1
                    if quiet % KEEPALIVE_EVERY == 0:
                        yield ": still here\n\n"
                await anyio.sleep(LIVE_POLL_S)
            yield "retry: 1000\n\n"

        return StreamingResponse(
            changes(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @routes.post("/runs/{run_id}/cancel")
    def cancel(run_id: RunId, conn: Db, s: Posted, form: Form) -> Response:
        head = queries.find_run(conn, journal, run_id, scope(s))
        if head is None:
            return _html(pages.not_found(who(s), s.csrf), 404)
        back = f"/console/runs/{quote(run_id)}?notice="
        if head.finished:
            return _see(back + quote(f"The run is over ({head.status}); nothing to cancel."))
        reason = (form.get("reason") or "").strip()[: cancels.MAX_REASON_CHARS].replace("\0", "")
        done = cancels.request(
            conn,
            s.key,
            head.tenant,
            run_id,
            reason or "cancelled from the console",
            form.get("idempotency_key") or uuid.uuid4().hex,
            config.topics.inbox,
            codec,
        )
        said = {
            "accepted": "Cancel requested.",
            "replayed": "Cancel requested (already sent).",
            "key_reused": "That form was already used: reload the page.",
        }[done.outcome]
        return _see(back + quote(said))

    @routes.post("/runs/{run_id}/approvals/{approval_id}")
    def decide(
        run_id: RunId,
        approval_id: Annotated[str, Path(pattern=APPROVAL_ID)],
        conn: Db,
        s: Posted,
        form: Form,
    ) -> Response:
        if s.key.role != APPROVER:
            raise HTTPException(
                403, f"this key may not decide approvals: its role is not {APPROVER}"
            )
        request = approvals.get(conn, journal, s.key.tenant, approval_id)
        if request is None or request.run_id != run_id:
            return _html(pages.not_found(who(s), s.csrf), 404)
        decision = form.get("decision", "")
        if decision not in approvals.DECISIONS:
            raise HTTPException(400, "decision: approve or reject")
        reason = (form.get("reason") or "").strip()[:1000].replace("\0", "")
        decided = approvals.decide(
            conn,
            request,
            s.key,
            decision,
            reason,
            form.get("idempotency_key") or uuid.uuid4().hex,
            config.topics.inbox,
            codec,
        )
        recorded = decided.recorded
        if decided.outcome == "accepted":
            said = f"Decision recorded: {decision}."
        elif decided.outcome == "replayed":
            said = f"Decision recorded before: {decision}."
        elif recorded is not None:
            said = f"Not recorded: {recorded.decision} by {recorded.approver} stands."
        else:
            said = "Not recorded: the run is over, or that form was already used."
        return _see(f"/console/runs/{quote(run_id)}?notice={quote(said)}")

    def report_file(root: pathlib.Path, name: str) -> pathlib.Path | None:
        """The file ``name`` under ``root`` when it is one the console serves: a regular file
        of a report's type, inside the folder once every symlink is followed."""
        base = root.resolve()
        try:
            path = (base / name).resolve()
        except (OSError, ValueError, RuntimeError):  # a NUL byte; a symlink loop (RuntimeError)
            return None
        if not path.is_relative_to(base) or not path.is_file():
            return None
        return path if path.suffix.lower() in REPORT_TYPES else None

    def report_files() -> list[str]:
        root = config.replays_dir
        if root is None or not root.is_dir():
            return []
        # Only what report() would serve: no link out of the folder, none to nothing.
        found = [
            (path.stat().st_mtime, p.relative_to(root).as_posix())
            for p in root.rglob("*.html")
            if (path := report_file(root, p.relative_to(root).as_posix())) is not None
        ]
        return [name for _, name in sorted(found, key=lambda f: f[0], reverse=True)]

    @routes.get("/reports")
    def reports(s: Signed) -> HTMLResponse:
        # Replays span tenants (and the harness's own): an operator's to read.
        names = report_files() if s.key.operator else None
        return _html(pages.reports_page(names, who=who(s), csrf=s.csrf))

    @routes.get("/reports/{name:path}")
    def report(name: str, s: Signed) -> Response:
        """A file of a replay's report, read-only, never outside the replays folder."""
        root = config.replays_dir
        if root is None or not s.key.operator:
            raise HTTPException(404, "no such report")
        path = report_file(root, name)
        if path is None:
            raise HTTPException(404, "no such report")
        return FileResponse(path, headers=_headers(REPORT_CSP))

    return routes
