"""The combined log of `runcoord dev`: every line every child writes, and the supervisor's own.

Text (the default): ``name | line``, the name in a colour of its own (stable: by the process's
place in the plan), no colour when the output is not a terminal (rich decides; ``NO_COLOR``
and ``FORCE_COLOR`` apply). ``--json``: one JSON object per line with a ``process`` field; a
child's own JSON line (``RUNCOORD_LOG_FORMAT=json``) gets the field added, any other line it
writes (uvicorn, a traceback) is wrapped as ``{"ts", "process", "msg", "raw": true}``.

Lines from the children's reader threads and from the supervisor are written whole, one at a
time, under one lock.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

SELF = "dev"  # the supervisor's own lines
PALETTE = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
    "dark_orange",
)
_LEVEL_STYLE = {"info": "bold", "warning": "bold yellow", "error": "bold red"}


def timestamp() -> str:
    """UTC, milliseconds, as runcoord's JSON logs write it (runcoord/logs.py)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class CombinedLog:
    def __init__(
        self, names: Sequence[str], *, json_lines: bool = False, stream: TextIO | None = None
    ) -> None:
        self.json_lines = json_lines
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()
        self._width = max(len(n) for n in [*names, SELF])
        self._colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
        self._console = Console(file=self._stream, soft_wrap=True, highlight=False)

    def colour(self, process: str) -> str:
        return self._colour.get(process, "white")

    def line(self, process: str, text: str) -> None:
        """One line a child wrote (without its newline)."""
        if self.json_lines:
            self._write_json(child_object(process, text))
        else:
            self._print(process, Text(text), self.colour(process))

    def say(self, message: str, *, level: str = "info", **fields: Any) -> None:
        """One line of the supervisor's own; ``fields`` go into its JSON object."""
        if self.json_lines:
            self._write_json(
                {"ts": timestamp(), "level": level, "process": SELF, "msg": message, **fields}
            )
        else:
            self._print(SELF, Text(message, style=_LEVEL_STYLE.get(level, "")), "bold white")

    def block(self, lines: Sequence[str]) -> None:
        """Several lines of the supervisor's own, printed together (the summary); text only."""
        with self._lock:
            for text in lines:
                self._console.print(self._prefix(SELF, "bold white") + Text(text), markup=False)
            self._stream.flush()

    def _prefix(self, process: str, style: str) -> Text:
        return Text(f"{process:<{self._width}} | ", style=style)

    def _print(self, process: str, body: Text, style: str) -> None:
        with self._lock:
            self._console.print(self._prefix(process, style) + body, markup=False)
            self._stream.flush()

    def _write_json(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, default=str)
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()


def child_object(process: str, text: str) -> dict[str, Any]:
    """A child's line as one JSON object with its ``process``."""
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if isinstance(found, dict):
            return {"process": process, **{k: v for k, v in found.items() if k != "process"}}
    return {"ts": timestamp(), "process": process, "msg": text, "raw": True}
