"""Map driver errors to civicsync's tree where they enter, keeping the SQLSTATE.

Transient (retry with backoff): the connection broke or could not be made (class 08, or no
SQLSTATE at all from a dead socket), the server is shutting down or starting (57P01-57P03),
too many connections (53300), serialization failure or deadlock (40001, 40P01). Anything else is
fatal for the run: retrying the same statement will give the same error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from civicsync.errors import CivicsyncError, DatabaseError, DatabaseUnavailableError

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03", "55P03"})
TRANSIENT_CLASSES = frozenset({"08"})


def is_transient(sqlstate: str | None) -> bool:
    """True if a server error with this SQLSTATE is worth retrying."""
    if sqlstate is None:
        return True  # no SQLSTATE: the connection died before the server could answer
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_CLASSES


def classify(exc: psycopg.Error, what: str) -> CivicsyncError:
    """The civicsync error for a psycopg error raised while doing ``what``."""
    sqlstate = exc.sqlstate
    detail = (exc.diag.message_primary or str(exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
    message = f"{what}: {detail}"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and sqlstate is None:
        return DatabaseUnavailableError(message)
    if sqlstate is not None and is_transient(sqlstate):
        return DatabaseUnavailableError(message, sqlstate)
    return DatabaseError(message, sqlstate)


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Re-raise psycopg errors inside the block as civicsync errors (SQLSTATE kept)."""
    try:
        yield
    except psycopg.Error as exc:
        raise classify(exc, what) from exc
