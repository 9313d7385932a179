"""An in-memory change source: a second source beside the pgoutput stream (and the Kafka consumer),
used by the tests to show that a new source plugs into the pipeline without touching apply, masking
or reconciliation. It is a source, not a stand-in for PostgreSQL: its batches go through the same
committer into a real target database.

:class:`MemoryLog` is an append-only log of change events (what a broker topic or a WAL is to the
real sources); :class:`MemorySource` reads it from a position, as a consumer reads a topic.
"""

from __future__ import annotations

import threading

from civicsync.events import ChangeEvent
from civicsync.pipeline.source import Batch, Position


class MemoryLog:
    """An append-only log of change events; a position is the number of events before it."""

    def __init__(self, stream: str = "memory") -> None:
        self.stream = stream  # the checkpoint's name in the target
        self._events: list[ChangeEvent] = []
        self._grown = threading.Condition()

    def append(self, *events: ChangeEvent) -> int:
        """Append events; returns the position after them."""
        with self._grown:
            self._events.extend(events)
            self._grown.notify_all()
            return len(self._events)

    def read(self, start: int, limit: int, max_wait: float) -> list[ChangeEvent]:
        """Up to ``limit`` events from ``start``, waiting at most ``max_wait`` seconds for the first."""
        with self._grown:
            self._grown.wait_for(lambda: len(self._events) > start, timeout=max_wait)
            return self._events[start:start + limit]

    def __len__(self) -> int:
        with self._grown:
            return len(self._events)


class MemorySource:
    """Reads a :class:`MemoryLog` from ``start`` (what the target holds) in batches of ``max_changes``."""

    def __init__(self, log: MemoryLog, start: int = 0, max_changes: int = 100) -> None:
        self.log = log
        self.max_changes = max_changes
        self.read_to = start  # where the next poll reads from
        self.acknowledged = start  # what the target committed, as acknowledged
        self.suspended = 0
        self.rewinds = 0

    def poll(self, max_wait: float) -> Batch | None:
        """The next events, or None when the log holds nothing new within ``max_wait`` seconds."""
        events = self.log.read(self.read_to, self.max_changes, max_wait)
        if not events:
            return None
        self.read_to += len(events)
        return Batch(events, {self.log.stream: self.read_to}, events[-1].source.ts)

    def acknowledge(self, position: Position) -> None:
        """The target committed up to ``position``."""
        self.acknowledged = max(self.acknowledged, position[self.log.stream])

    def suspend(self) -> None:
        """Nothing to let go of (a count, for the tests)."""
        self.suspended += 1

    def rewind(self) -> None:
        """Read again from what was acknowledged (a fenced batch is delivered again)."""
        self.rewinds += 1
        self.read_to = self.acknowledged
