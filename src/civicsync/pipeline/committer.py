"""The target side of a pipeline: apply a batch, write its checkpoint, commit, all in one target
transaction, and retry that whole unit on transient errors.

:class:`Committer` owns the retry (the config's ``retries.target_commit``, never numbers of its own)
and the forward-only rule for checkpoints: a position below one it already committed is refused with
:class:`~civicsync.errors.CheckpointRegressionError` before anything is written (the CDC target's
store refuses it once more in SQL). Its waits wake on the stop event, which ends the step with
:class:`~civicsync.errors.WorkerStopped`: nothing committed, nothing acknowledged. :class:`Pipeline`
polls a source, commits through the committer and acknowledges the source only after the commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from civicsync.errors import CheckpointRegressionError, TransientError
from civicsync.pipeline.source import Batch, ChangeSource, Fenced, Position, WorkerStopped
from civicsync.retry import Retry, backoff_delays

log = logging.getLogger(__name__)


class Target(Protocol):
    """Where a pipeline writes: one open transaction per attempt, committed by :meth:`commit`."""

    @property
    def name(self) -> str:
        """The target's name for logs and status (its connection name)."""
        ...

    def apply(self, batch: Batch) -> None:
        """Write the batch's changes in the open transaction (transform, mask, apply, dead letters)."""
        ...

    def checkpoint(self, batch: Batch) -> None:
        """Write ``batch.position`` in the same open transaction (raise Fenced if it is not ours)."""
        ...

    def commit(self) -> None:
        """Commit the transaction: rows and checkpoint become visible together."""
        ...

    def rollback(self) -> None:
        """Roll back whatever the attempt wrote (never raises: the session may be gone)."""
        ...

    def reconnect(self) -> None:
        """After a transient error: drop the session; the next attempt opens a new one."""
        ...


class NeedsIsolation(Exception):
    """A target refused the batch for a reason in its rows: the committer rolls back and writes it
    again at once (the target then applies it key by key and dead-letters the failing keys)."""


class Committer:
    """Apply → checkpoint → commit in one target transaction, retried on transient errors."""

    def __init__(self, target: Target, retry: Retry, stop: threading.Event, what: str) -> None:
        self.target = target
        self.retry = retry
        self.stop = stop
        self.what = what  # names the pipeline in logs ("slot x", "group g")
        self.position: dict[str, int] = {}  # the last committed checkpoint, per stream
        self.stalled: str | None = None  # why it is retrying instead of committing (None when it is not)
        self.retries = 0
        self.on_wait: Callable[[], None] | None = None  # called before each wait (a source lets go meanwhile)

    def commit(self, batch: Batch) -> None:
        """Commit ``batch`` and its checkpoint, or raise (nothing of it committed)."""
        self._refuse_regression(batch.position)
        delays = iter(backoff_delays(self.retry))
        while True:
            try:
                self.target.apply(batch)
                if batch.position is not None:
                    self.target.checkpoint(batch)
                self.target.commit()
            except NeedsIsolation:
                self.target.rollback()
                continue
            except TransientError as exc:
                self.target.rollback()
                delay = next(delays, None)
                if delay is None:
                    raise
                self.retries += 1
                self.stalled = f"{self.target.name} database unavailable: {exc}"
                log.warning("%s: target unavailable (%s); retrying in %.1fs", self.what, exc, delay)
                self._wait(delay)
                self.target.reconnect()
                continue
            except BaseException:
                self.target.rollback()
                raise
            self.stalled = None
            if batch.position is not None:
                self.position.update(batch.position)
            return

    def forget(self, streams: Iterable[str]) -> None:
        """The source no longer holds these streams (a Kafka partition revoked, or rewound after a
        fence): when it holds them again it starts from what the target stores, and the
        forward-only rule counts from there."""
        for stream in streams:
            self.position.pop(stream, None)

    def _refuse_regression(self, position: Position | None) -> None:
        for stream, value in (position or {}).items():
            stored = self.position.get(stream)
            if stored is not None and value < stored:
                raise CheckpointRegressionError(stream, value, stored)

    def _wait(self, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait()
        if self.stop.wait(seconds):
            # Asked to stop: this batch is not committed and its position not acknowledged, so the
            # next start receives it again. Stop now rather than after the whole backoff.
            raise WorkerStopped(f"{self.what}: stopped while waiting for {self.target.name}")


class Pipeline:
    """A source, a committer and the rule between them: acknowledge only what was committed."""

    def __init__(self, source: ChangeSource, committer: Committer,
                 on_commit: Callable[[Batch], None] | None = None) -> None:
        self.source = source
        self.committer = committer
        committer.on_wait = source.suspend
        self.on_commit = on_commit
        self.fenced = 0

    def step(self, max_wait: float) -> Batch | None:
        """Poll one batch, commit it and acknowledge it; None when idle or fenced (then rewound)."""
        batch = self.source.poll(max_wait)
        if batch is None:
            return None
        try:
            self.committer.commit(batch)
        except Fenced as fenced:
            self.fenced += 1
            log.warning("%s: %s; rewinding to what the target holds", self.committer.what, fenced)
            self.source.rewind()
            return None
        if self.on_commit is not None:
            self.on_commit(batch)
        if batch.position is not None:
            self.source.acknowledge(batch.position)
        return batch

    def run(self, max_wait: float, between: Callable[[], None] | None = None) -> None:
        """Step until the stop event is set; ``between`` runs after each step (heartbeats, retries)."""
        while not self.committer.stop.is_set():
            self.step(max_wait)
            if between is not None:
                between()
