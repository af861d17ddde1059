"""A real browser for the console's tests: Debian's chromium, driven by Playwright.

No browser is downloaded (`playwright install` is never run): the chromium package is the
browser, installed here through runcoord/stack/apt.py when it is missing and we are root with
apt-get (as in CI and the project's container), the way `runcoord stack up` installs its
servers. Only where it truly cannot be installed (not root, no apt) are the tests skipped,
with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from runcoord.errors import StackError
from runcoord.stack import apt
from runcoord.stack import browser as browser_setup
from tests.environment import unavailable


def ensure_chromium() -> Path:
    """Debian's chromium (`make test` installed it: `runcoord stack browser`); installed here
    the same way when the tests run on their own; skipped only where it cannot be (not root,
    no apt-get), with that reason (a failure in CI: tests/environment.py)."""
    if browser_setup.chromium_path() is None and not apt.can_install():
        unavailable(
            "the console's browser tests need Debian's chromium package: not installed, and it "
            "cannot be installed here (needs root and apt-get); `apt-get install chromium` or "
            "set RUNCOORD_CHROMIUM to a chromium binary"
        )
    try:
        return browser_setup.ensure_chromium()
    except StackError as exc:
        pytest.fail(str(exc))


# Module-scoped, not session-scoped: while Playwright's sync API is open it keeps an event
# loop running in this thread, and every async test after it (anyio, asyncio) would fail with
# "Cannot run the event loop while another loop is running". It must be closed before the
# suite moves on.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless chromium from Debian's package (no sandbox: CI runs the tests as root)."""
    executable = ensure_chromium()
    browser = playwright.chromium.launch(
        executable_path=str(executable),
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )
    yield browser
    browser.close()
