"""What a test does when this machine lacks something it needs (a network namespace, a
browser): skip with the reason, except where the run requires everything.

CI sets ``RUNCOORD_TESTS_REQUIRE_ALL=1`` (.ci/run): its machine is set up to run every
test, so there a missing piece fails the run instead of quietly skipping what it proves.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ALL = "RUNCOORD_TESTS_REQUIRE_ALL"


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: every test must run here)")
    pytest.skip(reason)
