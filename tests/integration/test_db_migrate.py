"""`runcoord db migrate` on a database of its own: concurrent runs, idempotence, edits refused,
a failing migration leaves nothing half-applied."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runcoord import db

pytestmark = pytest.mark.integration

RUNCOORD = str(Path(sys.executable).parent / "runcoord")


@pytest.fixture
def fresh_dsn(pg_dsn: str, unique: str) -> Iterator[str]:
    name = f"runcoord_migrate_{unique}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNCOORD, "db", *args], capture_output=True, text=True, timeout=60)


def test_two_concurrent_migrates_apply_each_migration_once(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as holder:
        # Hold the lock until both processes queue on it, so they really run at the same time.
        holder.execute("SELECT pg_advisory_lock(%s)", (db.ADVISORY_LOCK_KEY,))
        procs = [
            subprocess.Popen(
                [RUNCOORD, "db", "migrate", "--dsn", fresh_dsn],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60  # two CLI start-ups on a busy 2-core machine
        while holder.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
        ).fetchone() != (2,):
            assert time.monotonic() < deadline, "the migrate processes never queued on the lock"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    applied = [line for out, _ in outs for line in out.splitlines() if line.startswith("applied")]
    expected = [m.id for m in db.discover()]
    assert sorted(line.split()[1] for line in applied) == sorted(expected)
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT id FROM schema_migrations ORDER BY id").fetchall()
        assert [r[0] for r in rows] == sorted(expected)
        assert conn.execute("SELECT to_regclass('effect_ledger') IS NOT NULL").fetchone() == (True,)
    again = cli("migrate", "--dsn", fresh_dsn)
    assert again.returncode == 0 and "0 applied" in again.stdout
    status = cli("status", "--dsn", fresh_dsn)
    assert status.returncode == 0 and "pending" not in status.stdout


def test_status_reports_pending_and_exits_non_zero(fresh_dsn: str) -> None:
    status = cli("status", "--dsn", fresh_dsn)
    assert status.returncode == 1
    assert status.stdout.count("pending") == len(db.discover())


def test_an_edited_migration_is_refused(fresh_dsn: str) -> None:
    db.migrate(fresh_dsn)
    edited = [
        db.Migration(id=m.id, sql=m.sql + "\n-- edited", checksum="0" * 64) for m in db.discover()
    ]
    with pytest.raises(db.MigrationError, match="edited"):
        db.migrate(fresh_dsn, edited)
    assert any(s.changed for s in db.status(fresh_dsn, edited))


def test_a_failing_migration_rolls_back_whole(fresh_dsn: str) -> None:
    good = db.Migration("test/0001_good", "CREATE TABLE good (x int)", "a" * 64)
    bad = db.Migration(
        "test/0002_bad", "CREATE TABLE half (x int); SELECT no_such_function()", "b" * 64
    )
    with pytest.raises(db.MigrationError):
        db.migrate(fresh_dsn, [good, bad])
    with psycopg.connect(fresh_dsn) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM schema_migrations").fetchall()]
        assert ids == ["test/0001_good"]
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)


def test_an_unreachable_database_is_retriable() -> None:
    with pytest.raises(db.DatabaseUnavailable):
        db.migrate("postgresql://postgres@127.0.0.1:1/postgres")
