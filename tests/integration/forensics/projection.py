"""Helpers: run the real projector over a test's topics until the projection shows a condition."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from runcoord.forensics.projector import Projector, ProjectorConfig, projecting
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until


@contextmanager
def projector(bootstrap: str, dsn: str, topics: TopicNames, group: str) -> Iterator[Projector]:
    config = ProjectorConfig(bootstrap, dsn, topics, group_id=group, batch_wait_s=0.1)
    with projecting(config) as p:
        yield p


def wait_rows(dsn: str, sql: str, params: tuple[object, ...], want: Callable[[int], bool]) -> None:
    """Wait until ``sql`` (a count) satisfies ``want``."""

    def check() -> str | None:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(sql, params).fetchone()
        n = int(row[0]) if row else 0
        return None if want(n) else f"count is {n}"

    wait_until(check, timeout=60, what=sql.split("FROM")[1].strip()[:60])
