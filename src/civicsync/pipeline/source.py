"""A change source: where a pipeline's changes come from (the pgoutput stream, a Kafka consumer, or
the in-memory log of the tests).

A source hands out :class:`Batch` es. Each ends at a *position* (per stream: a slot's LSN, a
partition's next offset), which the committer writes as the checkpoint in the same target
transaction as the batch's rows; only after that commit is the position acknowledged back to the
source (flush the sink, then commit the offset). A source never learns of a batch's rows being
written any other way, so a crash anywhere re-delivers what was not committed, and the stored
checkpoint tells the next start what to skip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from civicsync.errors import Fenced as Fenced  # re-exported: it lives in the one tree
from civicsync.errors import WorkerStopped as WorkerStopped  # re-exported: it lives in the one tree

Position = Mapping[str, int]  # per stream (a slot, a topic partition): how far the target holds it


@dataclass(frozen=True)
class Batch:
    """Some changes of a source and the position it stands at once they are applied.

    ``position`` is None for a batch that moves no checkpoint (a chunk of an initial snapshot, whose
    rows are idempotent and whose position is written once, last)."""

    changes: Sequence[Any]
    position: Position | None
    commit_time: datetime | None = None  # the source commit time of its last change, when known


class ChangeSource(Protocol):
    """Where changes come from. Everything a new source needs to implement to plug into a pipeline."""

    def poll(self, max_wait: float) -> Batch | None:
        """The next batch, waiting at most ``max_wait`` seconds for its first change (None: idle)."""
        ...

    def acknowledge(self, position: Position) -> None:
        """The target committed everything up to ``position``: the source may let go of it."""
        ...

    def suspend(self) -> None:
        """The committer is waiting to retry: let go of the source's resources meanwhile (a
        replication connection must not hold up the source's shutdown)."""
        ...

    def rewind(self) -> None:
        """The last batch was not committed (a fence): deliver again from what the target holds."""
        ...
