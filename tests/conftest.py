"""Shared fixtures. Integration tests talk to the real stack; they fail (never skip) when it is down.

Point the suite at servers that are already running with RUNCOORD_BOOTSTRAP_SERVERS,
RUNCOORD_POSTGRES_DSN and RUNCOORD_REDIS_URL; otherwise the local stack's defaults are used
(`runcoord stack up`, which `make test` runs first).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from runcoord.config import Settings, load


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load()


@pytest.fixture(scope="session")
def bootstrap(settings: Settings) -> str:
    return settings.bootstrap


@pytest.fixture(scope="session")
def pg_dsn(settings: Settings) -> str:
    return settings.dsn


@pytest.fixture(scope="session")
def redis_url(settings: Settings) -> str:
    return settings.redis


@pytest.fixture
def unique() -> Iterator[str]:
    """A short unique token for topic names, group ids and transactional ids of one test."""
    yield uuid.uuid4().hex[:10]
