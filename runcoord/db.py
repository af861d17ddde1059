"""`runcoord db …`: apply the plain-SQL migrations that live beside the code owning each table.

Each migration runs in its own transaction and is recorded in ``schema_migrations`` in that
same transaction, so a crash leaves it either applied and recorded or neither. A session-level
advisory lock serialises concurrent runs (two replicas starting at once): the second waits,
then finds nothing left to do. Applied files are checksummed; editing one after it ran is
refused, because the database would no longer match what the file says.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg
import typer

from runcoord.config import load
from runcoord.errors import Fatal, Retriable, RuncoordError

app = typer.Typer(no_args_is_help=True)

# (set name, package holding a `migrations/` folder). Sets apply in this order; within a set,
# by the number that starts each file name. Never rename a set: it is part of each migration's id.
MIGRATION_SETS: tuple[tuple[str, str], ...] = (
    ("effects", "runcoord.effects"),
    ("sim_tools", "runcoord.sim.tools"),
    ("forensics", "runcoord.forensics"),
    ("api", "runcoord.api"),
)

# One constant shared by every runcoord process (the first 8 bytes of sha256("runcoord.migrate")).
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"runcoord.migrate").digest()[:8], "big", signed=True
)

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    id         text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Fatal):
    """The migrations on disk and the ones recorded in the database disagree."""


class DatabaseUnavailable(Retriable):
    """PostgreSQL could not be reached or dropped the connection."""


@dataclass(frozen=True)
class Migration:
    id: str  # "<set>/<file name without .sql>", e.g. "effects/0001_effect_ledger"
    sql: str
    checksum: str


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    applied_at: datetime | None
    changed: bool  # applied, but the file's checksum differs from the recorded one


def discover(sets: tuple[tuple[str, str], ...] = MIGRATION_SETS) -> list[Migration]:
    found: list[Migration] = []
    for set_name, package in sets:
        folder = resources.files(package).joinpath("migrations")
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
        for name in names:
            if not _FILE_NAME.match(name):
                raise MigrationError(f"{package}/migrations/{name}: expected NNNN_snake_name.sql")
            sql = folder.joinpath(name).read_text(encoding="utf-8")
            found.append(
                Migration(
                    id=f"{set_name}/{name.removesuffix('.sql')}",
                    sql=sql,
                    checksum=hashlib.sha256(sql.encode()).hexdigest(),
                )
            )
    return found


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc


def _recorded(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, tuple[str, datetime]]:
    rows = conn.execute("SELECT id, checksum, applied_at FROM schema_migrations").fetchall()
    return {str(i): (str(c), a) for i, c, a in rows if isinstance(a, datetime)}


def _check_unchanged(
    migrations: list[Migration], recorded: dict[str, tuple[str, datetime]]
) -> None:
    changed = [m.id for m in migrations if m.id in recorded and recorded[m.id][0] != m.checksum]
    if changed:
        raise MigrationError(
            f"applied migrations were edited afterwards: {', '.join(changed)}; "
            "restore them and add a new migration instead"
        )


def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    todo = discover() if migrations is None else migrations
    applied: list[str] = []
    try:
        with _connect(dsn) as conn:
            # Released when this session ends, however it ends: no unlock to forget.
            conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
            # Under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
            conn.execute(_CREATE_TABLE)
            recorded = _recorded(conn)
            _check_unchanged(todo, recorded)
            for m in todo:
                if m.id in recorded:
                    continue
                with conn.transaction():
                    # bytes, no parameters: sent verbatim, several statements allowed.
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (id, checksum) VALUES (%s, %s)",
                        (m.id, m.checksum),
                    )
                applied.append(m.id)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL failed during migrate: {exc}") from exc
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed after applying {applied}: {exc}") from exc
    return applied


def status(dsn: str, migrations: list[Migration] | None = None) -> list[MigrationStatus]:
    known = discover() if migrations is None else migrations
    try:
        with _connect(dsn) as conn:
            exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            recorded = _recorded(conn) if exists and exists[0] else {}
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL failed during status: {exc}") from exc
    return [
        MigrationStatus(
            migration=m,
            applied_at=recorded[m.id][1] if m.id in recorded else None,
            changed=m.id in recorded and recorded[m.id][0] != m.checksum,
        )
        for m in known
    ]


def _dsn(dsn: str | None) -> str:
    return dsn if dsn else load().dsn


def _fail(exc: RuncoordError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@app.command("migrate")
def migrate_cmd(
    dsn: str | None = typer.Option(None, help="PostgreSQL DSN (default: RUNCOORD_POSTGRES_DSN)."),
) -> None:
    """Apply pending migrations (idempotent; safe to run from several processes at once)."""
    try:
        applied = migrate(_dsn(dsn))
    except (Retriable, Fatal) as exc:
        raise _fail(exc) from exc
    for mid in applied:
        typer.echo(f"applied {mid}")
    typer.echo(f"{len(applied)} applied; database is up to date")


@app.command("status")
def status_cmd(
    dsn: str | None = typer.Option(None, help="PostgreSQL DSN (default: RUNCOORD_POSTGRES_DSN)."),
) -> None:
    """List migrations and whether each is applied; exit 1 if any is pending or edited."""
    try:
        rows = status(_dsn(dsn))
    except (Retriable, Fatal) as exc:
        raise _fail(exc) from exc
    for row in rows:
        if row.applied_at is None:
            mark = "pending"
        elif row.changed:
            mark = "CHANGED since applied"
        else:
            mark = f"applied {row.applied_at.isoformat(timespec='seconds')}"
        typer.echo(f"{row.migration.id:45} {mark}")
    if any(r.applied_at is None or r.changed for r in rows):
        raise typer.Exit(code=1)


__all__ = [
    "MIGRATION_SETS",
    "DatabaseUnavailable",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "app",
    "discover",
    "migrate",
    "status",
]
