"""The console's run list and replay reports, without a browser: the console's routes alone on
a private, migrated database, the projection's rows written as the projector writes them, and
an HTTP client signed in with a real key (a session cookie, as a browser would hold).

Proves what the README's "Console" section promises of /console/runs (newest first, the
filters, the counts by status, the stalled / dead-lettered / anomalous marks) and of
/console/reports (an operator's, read-only, never outside the replays folder).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from runcoord.api import console
from runcoord.api.keys import OPERATOR, create
from runcoord.codec import AvroCodec
from runcoord.kafka import TopicNames
from tests.integration.faultkit import private_database

pytestmark = pytest.mark.integration

TOPICS = TopicNames.with_prefix("")
JOURNAL = TOPICS.events
# When the rows were seeded (_seed sets it). Not the import time: a suite collects this module
# minutes before it runs it, and "updated half a minute ago" must still be recent then, or the
# console rightly calls the run stalled.
NOW = datetime.now(UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


# run_id: (tenant, thread, phase, accepted, updated, finished); accepted minutes ago.
RUNS: dict[str, tuple[str, str, str, float, float, float | None]] = {
    "r-old-done": ("acme", "th-1", "finished", 60, 59, 59),
    "r-stalled": ("acme", "th-2", "running", 50, 40, None),  # not moved for 40 min
    "r-dlq": ("acme", "th-3", "finished", 40, 39, 39),
    "r-again": ("acme", "th-1", "finished", 30, 29, 29),  # resubmission of r-old-done
    "r-held": ("acme", "th-4", "awaiting_approval", 20, 0.1, None),  # moved just now
    "r-other": ("globex", "th-9", "running", 10, 0.1, None),
    "r-newest": ("acme", "th-5", "running", 1, 0.1, None),
}


def _seed(conn: psycopg.Connection[Any]) -> None:
    global NOW
    NOW = datetime.now(UTC)
    for run_id, (tenant, thread, phase, acc, upd, fin) in RUNS.items():
        conn.execute(
            "INSERT INTO forensics_runs (journal, run_id, tenant, thread_id, provider, "
            "input_hash, kafka_partition, first_offset, last_offset, last_seq, phase, steps, "
            "accepted_at, updated_at, finished_at) "
            "VALUES (%s, %s, %s, %s, 'sim', %s, 0, 0, 5, 5, %s, 1, %s, %s, %s)",
            (
                JOURNAL, run_id, tenant, thread, f"h-{thread}", phase,
                ago(acc), ago(upd), None if fin is None else ago(fin),
            ),
        )  # fmt: skip
    # The projector's own resubmission mark (store.py's _LINK_RESUBMISSIONS).
    conn.execute(
        "UPDATE forensics_runs SET resubmission_of = 'r-old-done' "
        "WHERE journal = %s AND run_id = 'r-again'",
        (JOURNAL,),
    )
    # A letter on runs.dlq naming r-dlq; and one naming no run at all.
    letters: list[tuple[int, str | None]] = [(0, "r-dlq"), (1, None)]
    for offset, letter_run in letters:
        conn.execute(
            "INSERT INTO forensics_dead_letters (journal, kafka_partition, kafka_offset, run_id, "
            "kind, reason, source_topic, record_name, at) "
            "VALUES (%s, 0, %s, %s, 'poison', 'undecodable', 'runs.inbox', NULL, %s)",
            (JOURNAL, offset, letter_run, ago(39)),
        )
    # The same StartRun delivered twice to the coordinator: an anomaly of r-newest.
    conn.execute(
        "INSERT INTO forensics_events (journal, run_id, seq, kafka_partition, kafka_offset, "
        "event_type, at, note) VALUES (%s, 'r-newest', 2, 0, 9, 'InputIgnored', %s, %s)",
        (JOURNAL, ago(0.5), "StartRun already started"),
    )
    # Tools: charge_card held for approval in r-held; search_kb acted (gateway audit) in r-dlq.
    conn.execute(
        "INSERT INTO forensics_approvals (journal, approval_id, run_id, tenant, step_id, "
        "tool_call_id, tool, arguments_hash, policy_version, request_seq, deadline_at, "
        "requested_at) VALUES (%s, %s, 'r-held', 'acme', 's1', 'c1', 'charge_card', 'x', 'v1', "
        "3, %s, %s)",
        (JOURNAL, f"apr_{uuid.uuid4().hex}", NOW + timedelta(minutes=5), ago(19)),
    )
    conn.execute(
        "INSERT INTO sandbox_audit (tool, tenant, run_id, tool_call_id, payload_hash, acted_at) "
        "VALUES ('search_kb', 'acme', 'r-dlq', 'c1', 'p', %s)",
        (ago(39.5),),
    )


@pytest.fixture(scope="module")
def db(pg_dsn: str) -> Iterator[tuple[ConnectionPool[Any], dict[str, str]]]:
    """A private database with the runs above, a pool on it and keys: operator, acme, globex."""
    with private_database(pg_dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            _seed(conn)
            keys = {
                "operator": create(conn, "ops", name="ops", role=OPERATOR),
                "acme": create(conn, "acme"),
                "globex": create(conn, "globex"),
            }
        pool: ConnectionPool[Any] = ConnectionPool(
            dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True
        )
        try:
            yield pool, keys
        finally:
            pool.close()


Client = Callable[..., TestClient]


@pytest.fixture
def client(db: tuple[ConnectionPool[Any], dict[str, str]]) -> Iterator[Client]:
    """``client(key_name, replays_dir=None)``: a client of the console's routes, signed in."""
    pool, keys = db
    opened: list[TestClient] = []

    def make(who: str, replays_dir: Path | None = None) -> TestClient:
        app = FastAPI()
        config = console.ConsoleConfig(
            topics=TOPICS, bootstrap="127.0.0.1:1", replays_dir=replays_dir
        )
        app.include_router(console.router(config, pool=pool, codec=AvroCodec()))
        c = TestClient(app)
        opened.append(c)
        answer = c.post("/console/sign-in", data={"key": keys[who]}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        assert console.sessions.COOKIE in c.cookies
        return c

    yield make
    for c in opened:
        c.close()


ROW = re.compile(r'<tr class="run" data-run="([^"]+)">(.*?)</tr>', re.S)
COUNT = re.compile(r'<span class="count" data-status="([^"]+)">[^:]+: (\d+)</span>')


def listed(c: TestClient, **params: str) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """The run ids in page order, the counts by status, each run's marks cell."""
    answer = c.get("/console/runs", params=params)
    assert answer.status_code == 200, answer.text
    rows = ROW.findall(answer.text)
    marks = {run: cells.rsplit("<td>", 1)[-1] for run, cells in rows}
    counts = {s: int(n) for s, n in COUNT.findall(answer.text)}
    return [run for run, _ in rows], counts, marks


def test_runs_newest_first_with_counts_by_status(client: Client) -> None:
    runs, counts, _ = listed(client("operator"))
    newest_first = sorted(RUNS, key=lambda r: RUNS[r][3])
    assert runs == newest_first
    assert counts == {"awaiting_approval": 1, "finished": 3, "running": 3}


def test_a_tenant_sees_its_own_runs_whatever_tenant_it_asks_for(client: Client) -> None:
    acme = sorted((r for r in RUNS if RUNS[r][0] == "acme"), key=lambda r: RUNS[r][3])
    c = client("acme")
    assert listed(c)[0] == acme
    assert '<select name="tenant">' not in c.get("/console/runs").text  # no tenant filter
    assert listed(c, tenant="globex")[0] == acme
    runs, counts, _ = listed(client("globex"))
    assert runs == ["r-other"] and counts == {"running": 1}


def test_filters_and_the_counts_under_them(client: Client) -> None:
    c = client("operator")
    # status: the list narrows; the counts stay those of the other filters (every status).
    runs, counts, _ = listed(c, status="finished")
    assert runs == ["r-again", "r-dlq", "r-old-done"]
    assert counts == {"awaiting_approval": 1, "finished": 3, "running": 3}
    # tenant (an operator's filter, offering every tenant with runs)
    assert re.search(
        r'<select name="tenant"><option value="">any</option>'
        r'<option value="acme">acme</option><option value="globex">globex</option></select>',
        c.get("/console/runs").text,
    )
    runs, counts, _ = listed(c, tenant="globex")
    assert runs == ["r-other"] and counts == {"running": 1}
    # since: accepted at or after (naive datetime-local input is UTC)
    since = ago(25).replace(tzinfo=None).isoformat(timespec="seconds")
    runs, counts, _ = listed(c, since=since)
    assert runs == ["r-newest", "r-other", "r-held"]
    assert counts == {"awaiting_approval": 1, "running": 2}
    # a run id, then a thread id
    assert listed(c, q="r-dlq")[:2] == (["r-dlq"], {"finished": 1})
    runs, counts, _ = listed(c, q=" th-1 ")
    assert runs == ["r-again", "r-old-done"] and counts == {"finished": 2}
    # tool: held for approval, or acted through the gateway (its audit)
    assert listed(c, tool="charge_card")[:2] == (["r-held"], {"awaiting_approval": 1})
    assert listed(c, tool="search_kb")[:2] == (["r-dlq"], {"finished": 1})
    assert listed(c, tool="no_such_tool")[:2] == ([], {})
    # filters combine
    assert listed(c, status="running", tenant="acme")[0] == ["r-newest", "r-stalled"]


def test_marks_stalled_dead_lettered_and_anomalous(client: Client) -> None:
    _, _, marks = listed(client("operator"))
    assert marks["r-stalled"] == '<span class="mark">stalled</span></td>'
    assert marks["r-dlq"] == '<span class="mark">dead-lettered</span></td>'
    assert "anomalous: resubmitted" in marks["r-again"]
    assert "anomalous: resubmitted" in marks["r-newest"]  # the StartRun delivered twice
    # Live but moving, or finished long ago: nothing to mark.
    for quiet in ("r-held", "r-other", "r-old-done"):
        assert marks[quiet] == "</td>", quiet
    # A tenant sees the same marks on its runs.
    _, _, mine = listed(client("acme"))
    assert "stalled" in mine["r-stalled"] and "dead-lettered" in mine["r-dlq"]


# --------------------------------------------------------------------------- reports


@pytest.fixture
def replays(tmp_path: Path) -> Path:
    """A replays folder (index.html, a nested report, a stylesheet, a file of an unlisted
    type; symlinks to a file and a folder outside, to nothing, to itself) beside a file
    outside it."""
    root = tmp_path / "replays"
    (root / "run-1").mkdir(parents=True)
    (root / "index.html").write_text("<h1>replay index</h1>")
    (root / "run-1" / "report.html").write_text("<h1>replay one</h1>")
    (root / "run-1" / "style.css").write_text("h1 {}")
    (root / "run-1" / "notes.py").write_text("SECRET = 'not a report type'")
    (tmp_path / "outside.html").write_text("<h1>OUTSIDE</h1>")
    os.symlink(tmp_path / "outside.html", root / "escape.html")
    os.symlink(tmp_path, root / "up")
    os.symlink(tmp_path / "gone.html", root / "dangling.html")  # points nowhere
    os.symlink(root / "loop.html", root / "loop.html")  # points at itself
    return root


def test_an_operator_lists_and_reads_the_replay_reports(client: Client, replays: Path) -> None:
    c = client("operator", replays)
    page = c.get("/console/reports")
    assert page.status_code == 200
    assert '<a href="/console/reports/index.html">index.html</a>' in page.text
    assert '<a href="/console/reports/run-1/report.html">' in page.text
    # Neither a link out of the folder nor one to nothing is offered (nor breaks the page).
    for name in ("escape.html", "dangling.html", "loop.html"):
        assert name not in page.text
    for name, text in (("index.html", "replay index"), ("run-1/report.html", "replay one")):
        answer = c.get(f"/console/reports/{name}")
        assert answer.status_code == 200 and text in answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"].startswith("sandbox")
    assert c.get("/console/reports/run-1/style.css").status_code == 200
    # read-only
    assert c.post("/console/reports/index.html").status_code == 405
    assert c.delete("/console/reports/index.html").status_code == 405


def test_a_tenant_key_sees_no_reports(client: Client, replays: Path) -> None:
    c = client("acme", replays)
    page = c.get("/console/reports")
    assert page.status_code == 200
    assert "for operator keys" in page.text and "index.html" not in page.text
    for name in ("index.html", "run-1/report.html"):
        assert c.get(f"/console/reports/{name}").status_code == 404


def test_signed_out_gets_no_reports(client: Client, replays: Path) -> None:
    c = client("operator", replays)
    c.cookies.clear()
    answer = c.get("/console/reports/index.html", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"


@pytest.mark.parametrize(
    "path",
    [
        "/console/reports/..%2Foutside.html",  # encoded ..
        "/console/reports/%2E%2E/outside.html",
        "/console/reports/run-1/..%2F..%2Foutside.html",
        "/console/reports/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/console/reports//etc/passwd",  # absolute
        "/console/reports/%2Fetc%2Fpasswd",
        "/console/reports/escape.html",  # a symlink to a file outside
        "/console/reports/up/outside.html",  # through a symlinked folder
        "/console/reports/run-1/notes.py",  # not a report's file type
        "/console/reports/run-1",  # a folder
        "/console/reports/missing.html",
        "/console/reports/dangling.html",
        "/console/reports/loop.html",
        "/console/reports/a%00.html",  # a NUL byte
    ],
)
def test_nothing_outside_the_replays_folder_is_served(
    client: Client, replays: Path, path: str
) -> None:
    answer = client("operator", replays).get(path)
    assert answer.status_code == 404, (answer.status_code, answer.text[:200])
    assert "OUTSIDE" not in answer.text and "SECRET" not in answer.text
