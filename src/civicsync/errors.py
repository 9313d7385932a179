"""civicsync's exception tree, grouped by what the caller should do.

::

    CivicsyncError                    base of everything civicsync raises on purpose
    ├── FatalError                    stop: retrying will not help, a person must act
    │   ├── ConfigError               the config file is wrong (lists every problem)
    │   ├── UsageError                the command asked for something that cannot be (CLI exit 2)
    │   │   ├── UnknownFlowError      no flow has that name or id
    │   │   └── ApiKeyError           a key operation that cannot be done (bad name, scope, key)
    │   ├── SchemaMismatchError       the database does not match what the config declares
    │   ├── ValidationFailedError     a batch run's pre-commit validation refused the data
    │   ├── DatabaseError             a database error that is not transient (keeps its SQLSTATE)
    │   ├── MigrationError            a migration set disagrees with what the database recorded
    │   ├── NotMigratedError          the target lacks the reconciliation tables
    │   ├── MissingGrantError         a role lacks a privilege a flow needs (names the grant)
    │   ├── CaptureSetupError         the source is not ready for logical replication
    │   ├── ReplicationBrokenError    the replication stream failed for good (keeps its SQLSTATE)
    │   ├── DecodeError               a pgoutput message that breaks the protocol (also a ValueError)
    │   ├── FlowBusyError             another run of the flow holds its lock
    │   ├── CheckpointRegressionError a checkpoint would move back: refused (a bug, never data)
    │   ├── ApiServerError            the HTTP API could not start
    │   ├── KafkaUnavailableError     Kafka's jars or broker are not there (civicsync.kafka.jvm)
    │   │   └── ConnectError          Kafka Connect failed or refused a connector (civicsync.kafka.connect)
    │   ├── TopicsError               topics cannot be made as the config says (civicsync.kafka.topics)
    │   ├── DebeziumDecodeError       a Debezium value that cannot be decoded (civicsync.kafka.debezium)
    │   ├── EnvelopeError             a record that is not civicsync's envelope (civicsync.kafka.envelope)
    │   ├── TextDecodeError           a value with no exact PostgreSQL text (civicsync.kafka.pgtext)
    │   └── LocalPostgresError        the local PostgreSQL (demo, tests) could not start
    ├── TransientError                retry with backoff: the same work may succeed later
    │   ├── DatabaseUnavailableError  connection lost, admin shutdown, serialization failure, ...
    │   ├── RetriesExhaustedError     every attempt failed transiently; ``last`` is the final error
    │   └── DeliveryError             the broker did not acknowledge a record (civicsync.kafka.capture)
    ├── RowRejectedError              skip: one source row broke a rule; it goes to the dead letters
    ├── ReplayFailedError             a dead letter's key still cannot be applied (it stays pending)
    ├── ReconcileFailedError          a reconciliation run could not finish
    ├── Interrupted                   not a failure: the work ended before it committed, nothing of it written
    │   ├── Stopped                   a stop was asked for (capture.replication re-exports it)
    │   │   └── WorkerStopped         ... while a committer waited to retry (civicsync.pipeline)
    │   └── Fenced                    a change source lost ownership of what it read, e.g. a Kafka worker
    │                                 that lost its partitions: the batch rolled back, the source rewinds
    ├── ApiError                      an HTTP error response with named fields (civicsync.api.errors:
    │                                 it carries the API's response model)
    └── ConfigDeprecationWarning      not raised: warned (a FutureWarning too) when a config file uses
                                      an older form that still loads; names the form to write instead

Database errors are mapped where they enter (:func:`civicsync.db.errors.classify`, for psycopg 3 and
psycopg2 alike, through one SQLSTATE table), so code above the database layer only ever sees this
tree and the SQLSTATE is never lost. The Kafka package's errors live in civicsync.kafka and join
the tree as drawn.

``Interrupted`` and its subclasses are in the tree (they pickle, and a catch-all sees them) but are
not failures: a stop or a fence ends a pipeline step without committing. Code that catches
CivicsyncError to report a failure catches them first where they can arrive (the CDC worker's run,
``civicsync cdc run``'s start-up, the Kafka group applier's run, the pipeline's step for a fence).
Outside the tree are only a few signals that never leave their package (``NeedsIsolation``,
``Unavailable``, ``TooDifferent``, ``NotCompilable``).

Every error pickles (a worker process may hand one to its parent): :meth:`CivicsyncError.__reduce__`
rebuilds the instance from its attributes, whatever its constructor takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

E = TypeVar("E", bound=BaseException)


def _rebuild(cls: type[E], args: tuple[Any, ...], state: dict[str, Any]) -> E:
    """An instance of ``cls`` with ``args`` and ``state``, without calling its constructor."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class CivicsyncError(Exception):
    """Base class of every error civicsync raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds with cls(*self.args): wrong for constructors that take several
        # arguments and format one message from them. Rebuild from the attributes instead.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class FatalError(CivicsyncError):
    """Retrying will not help; the run stops and a person must act."""


class TransientError(CivicsyncError):
    """The same work may succeed if retried after a pause."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file: where it is and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class ConfigError(FatalError):
    """The config file is wrong. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SchemaMismatchError(FatalError):
    """A table or column the config declares does not exist in the database (or vice versa)."""


class ValidationFailedError(FatalError):
    """A batch run's validation refused the data before commit; the target is unchanged."""

    def __init__(self, flow: str, failures: list[str]) -> None:
        self.flow = flow
        self.failures = failures
        super().__init__(f"flow {flow}: validation failed, nothing was written: " + "; ".join(failures))


class DatabaseError(FatalError):
    """A database error that retrying will not fix. Keeps the server's SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(f"{message} (SQLSTATE {sqlstate})" if sqlstate else message)


class DatabaseUnavailableError(TransientError):
    """The database went away or asked us to retry (connection loss, shutdown, serialization)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(f"{message} (SQLSTATE {sqlstate})" if sqlstate else message)


class RowRejectedError(CivicsyncError):
    """One source row broke a flow rule. It is dead-lettered; the rest of the run goes on."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class UsageError(FatalError):
    """The command asked for something that cannot be: an unknown flow, a flow of the wrong kind, a
    bad key name or scope. The CLI exits 2 for it (bad input), like for a :class:`ConfigError`."""


class UnknownFlowError(UsageError):
    """No flow has that name or id."""


class ApiKeyError(UsageError):
    """A key operation the operator asked for cannot be done (bad name or scope, unknown key, ...): bad input."""


class MigrationError(FatalError):
    """A migration set is inconsistent with what the database has recorded."""


class NotMigratedError(FatalError):
    """The target database lacks the reconciliation tables."""


class MissingGrantError(FatalError):
    """A role civicsync runs as lacks a privilege a flow needs; the message names the grant."""


class CaptureSetupError(FatalError):
    """The source database is not ready for logical replication (settings, grants, identity)."""


class ReplicationBrokenError(FatalError):
    """The replication stream stopped on an error that reconnecting will not fix."""

    def __init__(self, message: str, sqlstate: str) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


class DecodeError(FatalError, ValueError):
    """A message that does not follow the protocol (a bug or a version mismatch, never data)."""


class FlowBusyError(FatalError):
    """Another run of the same flow holds the flow's lock."""


class ApiServerError(FatalError):
    """The HTTP API could not be started."""


class LocalPostgresError(FatalError):
    """The local PostgreSQL could not be created or started."""


class RetriesExhaustedError(TransientError):
    """Every attempt failed with a transient error; ``last`` is the final one."""

    def __init__(self, what: str, attempts: int, last: TransientError) -> None:
        self.attempts = attempts
        self.last = last
        super().__init__(f"{what}: gave up after {attempts} attempts; last error: {last}")


class ReplayFailedError(CivicsyncError):
    """The key still cannot be applied."""


class ReconcileFailedError(CivicsyncError):
    """A reconciliation run could not finish."""


class CheckpointRegressionError(FatalError):
    """A source position lower than the one stored was about to be committed; it is refused."""

    def __init__(self, slot: str, lsn: int, stored: int) -> None:
        self.slot = slot
        self.lsn = lsn
        self.stored = stored
        super().__init__(f"slot {slot}: refusing to move the stored position back from {stored} to {lsn}")



class Interrupted(CivicsyncError):
    """Not a failure: the work ended before it committed and nothing of it was written. The caller
    ends (a stop) or starts over from what the target holds (a fence)."""


class Stopped(Interrupted):
    """The stop event was set while waiting (to reconnect, to retry): the caller ends without more work."""


class WorkerStopped(Stopped):
    """The stop event was set while a committer waited to retry: it ends without committing the batch,
    and the source is not acknowledged, so the next start receives the batch again."""


class Fenced(Interrupted):
    """A change source lost ownership of what it read (a Kafka worker whose partitions another worker
    advanced): the batch was rolled back and the source rewinds to what the target holds."""


class ConfigDeprecationWarning(CivicsyncError, FutureWarning):
    """A config file uses an older form that still loads; the message names the form to write instead.

    Issued with :func:`warnings.warn`, never raised. A FutureWarning (shown by default) because the
    reader is the person who maintains the file; config/legacy.py says which forms."""
