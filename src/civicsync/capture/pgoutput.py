"""A decoder for PostgreSQL's built-in ``pgoutput`` logical-replication protocol (version 1).

Message layouts follow the PostgreSQL documentation, "Logical Replication Message Formats".
Column values arrive in PostgreSQL's text form, exactly what COPY gives the batch path, so both
paths feed the same transform chain. An unchanged TOASTed value arrives as :data:`UNCHANGED`,
never as a value: applying it must leave the target column alone.
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from civicsync.errors import DecodeError as DecodeError  # re-exported: it lives in the one tree
from civicsync.events import UNCHANGED as UNCHANGED
from civicsync.events import Value as Value
from civicsync.events import format_lsn as format_lsn

PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


class MessageType(enum.Enum):
    """The first byte of every pgoutput message."""

    BEGIN = b"B"
    COMMIT = b"C"
    ORIGIN = b"O"
    RELATION = b"R"
    TYPE = b"Y"
    INSERT = b"I"
    UPDATE = b"U"
    DELETE = b"D"
    TRUNCATE = b"T"
    MESSAGE = b"M"


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True)
class Relation:
    relation_id: int
    schema: str
    table: str
    replica_identity: str  # 'd' default (primary key), 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]

    # Derived once per relation (not per row; hashing the dataclass would cost more than the row).
    @functools.cached_property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    @functools.cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @functools.cached_property
    def key_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_key)

    @functools.cached_property
    def position(self) -> dict[str, int]:
        """Column name → index in the relation's tuples."""
        return {c.name: i for i, c in enumerate(self.columns)}

    @functools.cached_property
    def column_types(self) -> dict[str, int]:
        return {c.name: c.type_oid for c in self.columns}


@dataclass(frozen=True)
class TypeInfo:
    type_oid: int
    schema: str
    name: str


@dataclass(frozen=True)
class Insert:
    relation_id: int
    new: tuple[Value, ...]


@dataclass(frozen=True)
class Update:
    relation_id: int
    old: tuple[Value, ...] | None  # present with REPLICA IDENTITY FULL ('O') or a changed key ('K')
    old_is_key_only: bool
    new: tuple[Value, ...]


@dataclass(frozen=True)
class Delete:
    relation_id: int
    old: tuple[Value, ...]
    old_is_key_only: bool


@dataclass(frozen=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate | LogicalMessage


def pg_time(micros: int) -> datetime:
    """A protocol timestamp (microseconds since 2000-01-01 UTC) as an aware datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


_STRUCTS = {fmt: struct.Struct(fmt) for fmt in ("!b", "!B", "!h", "!i", "!I", "!q", "!Q")}
_INT32 = _STRUCTS["!i"]
_INT16 = _STRUCTS["!h"]
_UINT32 = _STRUCTS["!I"]
_N, _U, _T = ord("n"), ord("u"), ord("t")


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        # Precompiled structs: this runs for every field of every message.
        packer = _STRUCTS[fmt]
        if self.pos + packer.size > len(self.buf):
            raise DecodeError(f"message truncated at byte {self.pos}")
        values = packer.unpack_from(self.buf, self.pos)
        self.pos += packer.size
        return values

    def int8(self) -> int:
        return self.take("!b")[0]

    def byte(self) -> bytes:
        if self.pos >= len(self.buf):
            raise DecodeError(f"message truncated at byte {self.pos}")
        b = self.buf[self.pos : self.pos + 1]
        self.pos += 1
        return b

    def int16(self) -> int:
        return self.take("!h")[0]

    def int32(self) -> int:
        return self.take("!i")[0]

    def uint32(self) -> int:
        return self.take("!I")[0]

    def int64(self) -> int:
        return self.take("!q")[0]

    def uint64(self) -> int:
        return self.take("!Q")[0]

    def string(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError(f"unterminated string at byte {self.pos}")
        s = self.buf[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return s

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise DecodeError(f"message truncated at byte {self.pos}")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def tuple_data(self) -> tuple[Value, ...]:
        values, self.pos = _tuple_data(self.buf, self.pos)
        return values


def _tuple_data(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """TupleData at ``pos``: the values and the position after them.

    The hot loop of capture (every column of every row): locals only, and the bounds are checked by
    the struct and index operations themselves (a short buffer raises there), except a text value's
    length, which is checked before its bytes are sliced."""
    end = len(buf)
    values: list[Value] = []
    append = values.append
    try:
        (count,) = _INT16.unpack_from(buf, pos)
        pos += 2
        for _ in range(count):
            kind = buf[pos]
            if kind == _T:
                (size,) = _INT32.unpack_from(buf, pos + 1)
                pos += 5
                if pos + size > end:
                    raise DecodeError(f"message truncated at byte {pos}")
                append(buf[pos : pos + size].decode("utf-8"))
                pos += size
            elif kind == _N:
                append(None)
                pos += 1
            elif kind == _U:
                append(UNCHANGED)
                pos += 1
            else:
                raise DecodeError(f"unknown tuple value kind {bytes([kind])!r} (binary mode is not used)")
    except (struct.error, IndexError):
        raise DecodeError(f"message truncated at byte {pos}") from None
    return tuple(values), pos


_K, _O, _NEW = ord("K"), ord("O"), ord("N")
RowData = tuple[Literal["c", "u", "d"], int, tuple[Value, ...] | None, bool, tuple[Value, ...] | None]


def decode_row(payload: bytes) -> RowData | None:
    """An Insert, Update or Delete message as ``(op, relation_id, old, old_is_key_only, new)`` with
    op ``c``/``u``/``d``, without building message objects (the stream's fast path); None for any
    other message type."""
    kind = payload[:1]
    try:
        if kind == b"I":
            (relation_id,) = _UINT32.unpack_from(payload, 1)
            if payload[5] != _NEW:
                raise DecodeError("insert without a new tuple")
            return "c", relation_id, None, False, _tuple_data(payload, 6)[0]
        if kind == b"U":
            (relation_id,) = _UINT32.unpack_from(payload, 1)
            tag, pos = payload[5], 6
            old = None
            if tag in (_K, _O):
                old, pos = _tuple_data(payload, pos)
                tag = payload[pos]
                pos += 1
            if tag != _NEW:
                raise DecodeError(f"update without a new tuple (got {bytes([tag])!r})")
            return "u", relation_id, old, old is not None and payload[5] == _K, _tuple_data(payload, pos)[0]
        if kind == b"D":
            (relation_id,) = _UINT32.unpack_from(payload, 1)
            tag = payload[5]
            if tag not in (_K, _O):
                raise DecodeError(f"delete without an old tuple (got {bytes([tag])!r})")
            return "d", relation_id, _tuple_data(payload, 6)[0], tag == _K, None
    except (struct.error, IndexError):
        raise DecodeError(f"message truncated at byte {len(payload)}") from None
    return None


def _relation(r: _Reader) -> Relation:
    relation_id = r.uint32()
    schema, table = r.string(), r.string()
    identity = chr(r.take("!B")[0])
    columns = []
    for _ in range(r.int16()):
        flags = r.int8()
        name = r.string()
        type_oid, typmod = r.uint32(), r.int32()
        columns.append(Column(name, type_oid, typmod, bool(flags & 1)))
    return Relation(relation_id, schema, table, identity, tuple(columns))


def decode(payload: bytes) -> Message:
    """Decode one pgoutput message."""
    row = decode_row(payload)
    if row is not None:
        op, relation_id, old, key_only, new = row
        if op == "c":
            assert new is not None
            return Insert(relation_id, new)
        if op == "u":
            assert new is not None
            return Update(relation_id, old, key_only, new)
        assert old is not None
        return Delete(relation_id, old, key_only)
    r = _Reader(payload)
    try:
        kind = MessageType(r.byte())
    except ValueError:
        raise DecodeError(f"unknown pgoutput message type {payload[:1]!r}") from None
    match kind:
        case MessageType.BEGIN:
            final_lsn, ts, xid = r.uint64(), r.int64(), r.uint32()
            return Begin(final_lsn, pg_time(ts), xid)
        case MessageType.COMMIT:
            r.int8()  # flags, unused
            commit_lsn, end_lsn, ts = r.uint64(), r.uint64(), r.int64()
            return Commit(commit_lsn, end_lsn, pg_time(ts))
        case MessageType.ORIGIN:
            return Origin(r.uint64(), r.string())
        case MessageType.RELATION:
            return _relation(r)
        case MessageType.TYPE:
            return TypeInfo(r.uint32(), r.string(), r.string())
        case MessageType.TRUNCATE:
            n, options = r.int32(), r.int8()
            ids = tuple(r.uint32() for _ in range(n))
            return Truncate(ids, bool(options & 1), bool(options & 2))
        case MessageType.MESSAGE:
            flags = r.int8()
            lsn = r.uint64()
            prefix = r.string()
            content = r.raw(r.int32())
            return LogicalMessage(bool(flags & 1), lsn, prefix, content)
    raise DecodeError(f"unhandled message type {kind}")  # pragma: no cover


def parse_lsn(text: str) -> int:
    """'16/B374D848' → integer LSN."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
