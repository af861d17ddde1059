from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.tools.sandbox import Sandbox, running_sandbox


@pytest.fixture(scope="module")
def sandbox(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox gateway of the test module's own (its own process and database)."""
    with running_sandbox(pg_dsn, tmp_path_factory.mktemp("gateway")) as running:
        yield running
