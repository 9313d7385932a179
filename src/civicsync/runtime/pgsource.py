"""The pgoutput replication stream as a pipeline :class:`~civicsync.pipeline.source.ChangeSource`.

A batch is whole source transactions (collected by the worker: up to ``batch_max_changes``, at most
``batch_max_wait_ms`` after the first); those at or below what the target already holds are dropped
here, so a restart neither loses nor double-applies a change. The batch ends at the slot's new
position (never below the stored one), and acknowledging it lets the server recycle that WAL.
"""

from __future__ import annotations

from collections.abc import Callable

from civicsync.capture.replication import PrefetchingStream, ReplicationStream, Transaction
from civicsync.errors import FatalError
from civicsync.pipeline.source import Batch, Position

Stream = ReplicationStream | PrefetchingStream


class PgoutputSource:
    """One replication slot's stream, read in batches of whole transactions."""

    def __init__(self, stream: Stream, slot: str, collect: Callable[[float], list[Transaction]],
                 floor: Callable[[], int], stored: Callable[[], int], ack_at: Callable[[int], int]) -> None:
        self.stream = stream
        self.slot = slot
        self._collect = collect  # whole transactions, waiting at most the given seconds for the first
        self._floor = floor  # transactions ending at or below it are applied already (for every flow)
        self._stored = stored  # the position the target holds
        self._ack_at = ack_at  # what may be acknowledged once the target holds a position (flow stops)

    def poll(self, max_wait: float) -> Batch | None:
        """The next batch of transactions not yet applied, or None."""
        floor = self._floor()
        fresh = [t for t in self._collect(max_wait) if t.end_lsn > floor]
        if not fresh:
            return None
        last = fresh[-1]
        return Batch(fresh, {self.slot: max(self._stored(), last.end_lsn)}, last.commit_time)

    def acknowledge(self, position: Position) -> None:
        """The target committed ``position``: tell the server (behind a flow stopped by a schema change)."""
        self.stream.acknowledge(self._ack_at(position[self.slot]))

    def suspend(self) -> None:
        """Let go of the server while the committer waits (it must not hold up the source's shutdown)."""
        self.stream.suspend()

    def rewind(self) -> None:
        """Never needed: a replication slot has one reader at a time, so this source is never fenced."""
        raise FatalError(f"replication slot {self.slot}: a pgoutput source cannot be fenced or rewound")
