"""Progress bars while a replay runs: turns accepted, in flight, terminal; faults fired.

Where the output is not a terminal (a log file, CI), bars would show nothing until the end,
so a plain line is printed every ``LINE_EVERY_S`` instead.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

LINE_EVERY_S = 30.0


class Progress:
    def __init__(self, system: str, turns: int, faults: int) -> None:
        self._system, self._turns, self._total_faults = system, turns, faults
        self._started = time.monotonic()
        self._next_line = self._started + LINE_EVERY_S
        self._bars = RichProgress(
            TextColumn("[bold]{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self._sent = self._bars.add_task(f"{system}: turns accepted", total=turns)
        self._flight = self._bars.add_task(f"{system}: in flight", total=max(1, turns))
        self._done = self._bars.add_task(f"{system}: terminal", total=turns)
        self._faults = self._bars.add_task(f"{system}: faults fired", total=max(1, faults))

    def __enter__(self) -> Progress:
        self._bars.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bars.__exit__(kind, exc, tb)

    def update(self, counts: dict[str, int], faults: int) -> None:
        # Runs include client resubmissions; the bars count runs against the trace's turns.
        self._bars.update(self._sent, completed=counts["sent"])
        self._bars.update(self._flight, completed=counts["in_flight"])
        self._bars.update(self._done, completed=counts["finished"])
        self._bars.update(self._faults, completed=faults)
        now = time.monotonic()
        if not self._bars.console.is_terminal and now >= self._next_line:
            self._next_line = now + LINE_EVERY_S
            print(
                f"[{self._system}] {now - self._started:6.0f} s: {counts['sent']}/{self._turns}"
                f" sent, {counts['in_flight']} in flight, {counts['finished']} terminal,"
                f" faults {faults}/{self._total_faults}",
                file=sys.stderr,
                flush=True,
            )
