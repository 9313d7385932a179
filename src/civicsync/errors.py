"""civicsync's exception tree, grouped by what the caller should do.

::

    CivicsyncError                  base of everything civicsync raises on purpose
    ├── FatalError                  stop: retrying will not help, a person must act
    │   ├── ConfigError             the config file is wrong (lists every problem)
    │   ├── SchemaMismatchError     the database does not match what the config declares
    │   ├── ValidationFailedError   a batch run's pre-commit validation refused the data
    │   └── DatabaseError           a database error that is not transient (keeps its SQLSTATE)
    ├── TransientError              retry with backoff: the same work may succeed later
    │   └── DatabaseUnavailableError  connection lost, admin shutdown, serialization failure, ...
    └── RowRejectedError            skip: one source row broke a rule; it goes to the dead letters

Database errors are mapped where they enter (:func:`civicsync.db.errors.classify`), so code above
the database layer only ever sees this tree and the SQLSTATE is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass


class CivicsyncError(Exception):
    """Base class of every error civicsync raises on purpose."""


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
