"""Which offsets an at-least-once consumer may commit while work finishes out of order."""

from __future__ import annotations

import heapq
import threading


class OffsetTracker:
    """Per partition: the committable offset is the lowest one still being worked on.

    Work finishes out of order (a watch takes seconds, a tool call milliseconds); committing
    past unfinished work would lose it on a crash, so the commit waits for the slowest.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, list[int]] = {}  # partition -> heap of unfinished offsets
        self._done: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}  # partition -> one past the highest offset seen
        self._committed: dict[int, int] = {}
        # Bumped when a partition is revoked, so work started before cannot mark offsets
        # of a later assignment as done.
        self._generation: dict[int, int] = {}

    def started(self, partition: int, offset: int) -> int:
        """Returns the generation to hand back to :meth:`finished`."""
        with self._lock:
            heapq.heappush(self._open.setdefault(partition, []), offset)
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)
            return self._generation.get(partition, 0)

    def finished(self, partition: int, offset: int, generation: int = 0) -> None:
        with self._lock:
            if partition in self._open and self._generation.get(partition, 0) == generation:
                self._done.setdefault(partition, set()).add(offset)

    def current(self, partition: int, generation: int) -> bool:
        """Whether work started in this generation still belongs to us (not revoked since)."""
        with self._lock:
            return self._generation.get(partition, 0) == generation

    def committable(self) -> dict[int, int]:
        """Partition -> offset to commit, only where it moved since the last call."""
        out: dict[int, int] = {}
        with self._lock:
            for partition, heap in self._open.items():
                done = self._done.setdefault(partition, set())
                while heap and heap[0] in done:
                    done.discard(heapq.heappop(heap))
                offset = heap[0] if heap else self._next[partition]
                if self._committed.get(partition) != offset:
                    self._committed[partition] = offset
                    out[partition] = offset
        return out

    def forget(self, partitions: list[int]) -> None:
        """Revoked: its unfinished work will be redelivered to the new owner."""
        with self._lock:
            for p in partitions:
                self._generation[p] = self._generation.get(p, 0) + 1
                self._open.pop(p, None)
                self._done.pop(p, None)
                self._next.pop(p, None)
                self._committed.pop(p, None)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(h) for h in self._open.values()) - sum(
                len(d) for d in self._done.values()
            )
