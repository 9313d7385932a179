"""Helpers the callback writers share: per-key locks, reference checks, field paths."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import sql

from civicsync.api.context import Conn
from civicsync.api.errors import ApiError, FieldError
from civicsync.config.service import IdRef
from civicsync.sqlnames import table_ident


def item_field(index: int, batch: bool, name: str = "") -> str:
    """The path of an item's field as the caller sees it: ``items.3.citizen_id`` or ``citizen_id``."""
    prefix = f"items.{index}" if batch else ""
    return ".".join(p for p in (prefix, name) if p) or "body"


def lock_keys(conn: Conn, keys: Iterable[str]) -> None:
    """Serialise writers of the same keys until the transaction ends (advisory locks, taken in a fixed
    order so two requests sharing keys never deadlock)."""
    ids = sorted({int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big", signed=True)
                  for k in keys})
    conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) s",
                 (ids,))


def require_references(conn: Conn, ref: IdRef, refs: Sequence[tuple[str, Any]], what: str) -> None:
    """422 naming every field whose value (``refs``: field path, value) is not in ``ref``'s table.column."""
    values = sorted({v for _, v in refs if v is not None}, key=str)
    if not values:
        return
    rows = conn.execute(sql.SQL("SELECT x FROM unnest({}::{}[]) AS x WHERE NOT EXISTS"
                                " (SELECT 1 FROM {} t WHERE t.{} = x)").format(
        sql.Placeholder(), sql.SQL(ref.type), table_ident(ref.table), sql.Identifier(ref.column)),
        (values,)).fetchall()
    missing = {r[0] for r in rows}
    if missing:
        fields = [FieldError(field=path, message=f"no {what} with this id: {shorten(value)}", type="unknown_reference")
                  for path, value in refs if value in missing]
        raise ApiError(422, f"unknown {what} id(s) at {', '.join(f.field for f in fields)}", fields)


def shorten(value: Any) -> str:
    """An id as error messages may show it: its first 4 characters and an ellipsis (``5b0c…``), enough
    for the caller to find the item it sent, too little to identify a person in a log (issue 10.5)."""
    text = str(value)
    return text if len(text) <= 4 else f"{text[:4]}…"


def columns(names: Iterable[str]) -> sql.Composed:
    """``a, b, c`` as quoted identifiers."""
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def plain(value: Any) -> int | str:
    """An id as a response shows it: a number stays a number, anything else (a UUID) becomes text."""
    return value if isinstance(value, int | str) else str(value)
