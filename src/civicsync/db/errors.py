"""Map driver errors to civicsync's tree where they enter, keeping the SQLSTATE; and say what went
wrong without the values the server quoted.

Transient (retry with backoff): the connection broke or could not be made (class 08, or no
SQLSTATE at all from a dead socket), the server is shutting down or starting (57P01-57P03),
too many connections (53300), serialization failure or deadlock (40001, 40P01), a statement or
lock timeout (57014, 55P03: the same statement succeeds once the lock holder or the load is gone).
Anything else is fatal for the run: retrying the same statement will give the same error.

PostgreSQL quotes the offending values in its messages (``invalid input syntax for type date:
"29/02/2024"``, ``Key (national_id)=(…)`` in the detail). Those values may be personal data, so
:func:`describe` is the one place every path that stores or logs a database error goes through: it
keeps the SQLSTATE, the constraint, table, column and type the server names, and the primary message
with every quoted part that is not one of those names replaced by ``"…"``. The detail, hint, context
and query are never kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg2

from civicsync.errors import CivicsyncError, DatabaseError, DatabaseUnavailableError

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03", "55P03", "57014"})
TRANSIENT_CLASSES = frozenset({"08"})

# Errors a reconnect does not heal: an object or privilege is missing (42: the slot or publication is
# gone, the role may not replicate), authentication or the database itself (28, 3D), a feature the
# server refuses (0A), and 55000, "can no longer get changes from replication slot" (invalidated).
PERMANENT_CLASSES = frozenset({"42", "28", "3D", "0A"})
PERMANENT_SQLSTATES = frozenset({"55000"})


_STARTUP_REFUSALS = (("must be superuser or replication role", "42501"), ("permission denied", "42501"),
                     ("password authentication failed", "28P01"), ("no pg_hba.conf entry", "28000"),
                     ('role "', "28000"), ('database "', "3D000"))




def is_permanent(exc: BaseException) -> bool:
    """True for a replication error whose SQLSTATE says a reconnect would fail the same way."""
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and (sqlstate in PERMANENT_SQLSTATES or sqlstate[:2] in PERMANENT_CLASSES)

REDACTED = '"…"'
# A double-quoted part of a message ("" inside is an escaped quote), or a parenthesised key/value list.
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_KEY_VALUES = re.compile(r"\((?:[^()]|\([^()]*\))*\)=\((?:[^()]|\([^()]*\))*\)")
# Messages an application wrote itself (RAISE in PL/pgSQL, class P0) may quote anything in any form.
_FREE_TEXT_CLASSES = frozenset({"P0"})
_RAISED = re.compile(r"\bRAISE\s*$", re.MULTILINE)
# Errors about names in civicsync's own statements (undefined table or column, permissions...) quote
# identifiers, not values: kept as they are. A syntax error (42601) quotes a piece of the statement.
_IDENTIFIER_CLASSES = frozenset({"42"})
_STATEMENT_TEXT = frozenset({"42601"})
# Data exceptions (class 22) put the value after a colon, quoted or not ("0xc3 0x28" for bad bytes).
_DATA_CLASS = "22"


def is_transient(sqlstate: str | None) -> bool:
    """True if a server error with this SQLSTATE is worth retrying."""
    if sqlstate is None:
        return True  # no SQLSTATE: the connection died before the server could answer
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_CLASSES


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg 3 or psycopg2 error (None for anything else, or a dead connection).
    psycopg2 reports a connection the server refused at start-up as text only: its SQLSTATE is
    recognised from the server's message (:data:`_STARTUP_REFUSALS`)."""
    code = _driver_sqlstate(exc)
    if code:
        return code
    if isinstance(exc, psycopg2.OperationalError) and "FATAL:" in str(exc):
        fatal = str(exc).split("FATAL:", 1)[1]
        return next((code for text, code in _STARTUP_REFUSALS if text in fatal
                     and (not text.endswith('"') or "does not exist" in fatal)), None)
    return None


def _driver_sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return str(code) if code else None


def describe(exc: BaseException, *, with_sqlstate: bool = True) -> str:
    """What a database error says, with no value in it: the primary message with quoted values
    redacted, then the names the server gave (constraint, table, column, type) and the SQLSTATE.
    Works for psycopg 3 and psycopg2 errors; anything else gives its first line."""
    diag = getattr(exc, "diag", None)
    sqlstate = _driver_sqlstate(exc)  # as the driver reported it (the message is the server's)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary is None:
        text = str(exc).strip()
        primary = text.splitlines()[0] if text else type(exc).__name__
    names = {k: v for k in ("schema_name", "table_name", "column_name", "datatype_name", "constraint_name")
             if (v := getattr(diag, k, None) if diag is not None else None)}
    message = _scrub(primary, sqlstate, set(names.values()))
    # A RAISE may use any SQLSTATE (`USING ERRCODE = 'check_violation'`): its context says it was a RAISE
    # ("… line 1 at RAISE"; the statement name stays untranslated whatever lc_messages is).
    raised = _RAISED.search(str(getattr(diag, "context", None) or "")) is not None
    if raised or (sqlstate is not None and sqlstate[:2] in _FREE_TEXT_CLASSES):
        message = "raised by a function or trigger (its message is not kept: it may quote values)"
    parts = [message]
    for label, key in (("constraint", "constraint_name"), ("table", "table_name"), ("column", "column_name"),
                       ("type", "datatype_name")):
        if key in names:
            parts.append(f"{label} {names[key]}")
    if sqlstate and with_sqlstate:
        parts.append(f"SQLSTATE {sqlstate}")
    return "; ".join(parts)


def _scrub(message: str, sqlstate: str | None, names: set[str]) -> str:
    if sqlstate is None:
        return message  # no server answer: a connection failure (host, port, user), no row values
    if sqlstate[:2] in _IDENTIFIER_CLASSES and sqlstate not in _STATEMENT_TEXT:
        return message
    if sqlstate[:2] == _DATA_CLASS and ": " in message:
        message = message.split(": ", 1)[0] + ": …"
    return redact(message, names)


def redact(message: str, names: set[str] | frozenset[str] = frozenset()) -> str:
    """``message`` with every double-quoted part replaced by ``"…"`` unless it is one of ``names``
    (identifiers the server reported separately), and any ``(columns)=(values)`` list cut."""
    def quoted(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1].replace('""', '"')
        return match.group(0) if inner in names else REDACTED

    return _QUOTED.sub(quoted, _KEY_VALUES.sub("(…)=(…)", message))


def classify(exc: psycopg.Error | psycopg2.Error, what: str) -> CivicsyncError:
    """The civicsync error for a psycopg 3 or psycopg2 error raised while doing ``what`` (its message
    holds no value), by the one SQLSTATE table above."""
    sqlstate = sqlstate_of(exc)
    message = f"{what}: {describe(exc, with_sqlstate=False)}"  # the civicsync error adds the SQLSTATE
    lost = (psycopg.OperationalError, psycopg.InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError)
    if isinstance(exc, lost) and sqlstate is None:
        return DatabaseUnavailableError(message)
    if sqlstate is not None and is_transient(sqlstate):
        return DatabaseUnavailableError(message, sqlstate)
    return DatabaseError(message, sqlstate)


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Re-raise psycopg errors inside the block as civicsync errors (SQLSTATE kept; the driver's error
    is their cause, for callers that look at its type, and is never logged: its detail quotes values)."""
    try:
        yield
    except psycopg.Error as exc:
        raise classify(exc, what) from exc
