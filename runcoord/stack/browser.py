"""The console's test browser: Debian's chromium (driven by Playwright, which downloads none).

`make test` runs `runcoord stack browser` before the tests, so a fresh machine gets it from
the project's own set-up; the tests' fixture (tests/integration/console/conftest.py) only
finds it, or installs it the same way when run on their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runcoord.errors import StackError
from runcoord.stack import apt

PACKAGE = "chromium"
CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
WHY = "the console's browser tests drive Debian's chromium"


def chromium_path() -> Path | None:
    """The chromium to drive: RUNCOORD_CHROMIUM when set, else Debian's."""
    named = os.environ.get("RUNCOORD_CHROMIUM")
    if named:
        return Path(named)
    for candidate in CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("chromium")
    return Path(found) if found else None


def ensure_chromium() -> Path:
    """Debian's chromium, installed first when missing; StackError when it cannot be."""
    found = chromium_path()
    if found is not None:
        return found
    apt.install(PACKAGE, why=WHY)  # StackError, with the fix, when not root or apt fails
    found = chromium_path()
    if found is None:
        raise StackError(f"apt-get installed {PACKAGE}, yet no chromium binary is at {CANDIDATES}")
    return found
