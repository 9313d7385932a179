"""API keys: made, listed, revoked and checked; only a SHA-256 of each key is ever stored.

A key reads ``csk_<key_id>_<secret>``: ``key_id`` (12 hex digits) is kept in clear to find the row,
``secret`` is 256 random bits. Because the whole key is random, a plain SHA-256 is enough to make a
stolen table useless (there is nothing to guess); a slow password hash would only slow every request.
Keys are compared in constant time. The key is shown once, by :func:`create_key`, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from civicsync.config import LoadedConfig
from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.errors import ApiKeyError as ApiKeyError  # re-exported: it lives in the one tree
from civicsync.errors import CivicsyncError

SCOPES = ("forecasts:write", "alerts:write", "admin:read", "admin:write")
"""Every scope a key may carry."""

PREFIX = "csk"
_KEY = re.compile(r"^csk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    client: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        return {"key_id": self.key_id, "name": self.name, "client": self.client, "scopes": list(self.scopes),
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the key that authenticated it."""

    key_id: str
    name: str
    client: str
    scopes: frozenset[str]


def _record(row: Any) -> ApiKey:
    """An :class:`ApiKey` from (key_id, name, client, scopes, created_at, revoked_at)."""
    return ApiKey(str(row[0]), str(row[1]), str(row[2]), tuple(row[3]), row[4], row[5])


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id_of(key: str) -> str | None:
    """The key_id part of a well-formed key (safe to log), or None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def _check_new(name: str, client: str, scopes: list[str]) -> None:
    for label, value in (("name", name), ("client", client)):
        if not _NAME.match(value):
            raise ApiKeyError(f"{label} {value!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
                              "starting with a letter or digit")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ApiKeyError(f"scopes must be one or more of {', '.join(SCOPES)}"
                          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))


def _api_dsn(config: LoadedConfig) -> tuple[str, str]:
    api = config.model.service.api
    if not api.enabled:
        raise ApiKeyError("this config has no HTTP API (service.api.enabled: false): API keys have nowhere to live")
    name = api.connection
    return config.dsn(name), name


def create_key(config: LoadedConfig, name: str, scopes: list[str], client: str | None = None) -> tuple[str, ApiKey]:
    """Make a key; returns ``(key, stored record)``. The key itself exists only in the return value.

    ``client`` (default: ``name``) is the caller the key speaks for: keys of one client share its
    alert ids, so a key can be rotated without a resent alert becoming a duplicate.
    """
    client = client or name
    scopes = sorted(set(scopes), key=SCOPES.index) if all(s in SCOPES for s in scopes) else scopes
    _check_new(name, client, scopes)
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    dsn, label = _api_dsn(config)
    with connect(dsn, purpose="apikey", autocommit=True, label=label) as conn:
        try:
            with mapped_errors("storing the API key"):
                row = conn.execute(
                    "INSERT INTO civicsync.api_keys (key_id, name, client, scopes, key_sha256)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING created_at",
                    (key_id, name, client, scopes, _digest(key))).fetchone()
        except CivicsyncError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise ApiKeyError(f"a key named {name!r} is in force already; revoke it first") from None
            raise
    assert row is not None
    return key, _record((key_id, name, client, scopes, row[0], None))


def list_keys(config: LoadedConfig) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    dsn, label = _api_dsn(config)
    with connect(dsn, purpose="apikey", autocommit=True, label=label) as conn, mapped_errors("listing API keys"):
        rows = conn.execute("SELECT key_id, name, client, scopes, created_at, revoked_at FROM civicsync.api_keys"
                            " ORDER BY created_at, key_id").fetchall()
    return [_record(r) for r in rows]


def revoke_key(config: LoadedConfig, name_or_id: str) -> ApiKey:
    """Revoke the key in force with this name or key_id; it stops working at once."""
    if "\x00" in name_or_id:  # no name holds one (PostgreSQL text cannot): bad input, not a failed revoke
        raise ApiKeyError("no key in force is named or has the id given: it holds a NUL byte")
    dsn, label = _api_dsn(config)
    with connect(dsn, purpose="apikey", autocommit=True, label=label) as conn, mapped_errors("revoking an API key"):
        row = conn.execute(
            "UPDATE civicsync.api_keys SET revoked_at = clock_timestamp()"
            " WHERE (name = %s OR key_id = %s) AND revoked_at IS NULL"
            " RETURNING key_id, name, client, scopes, created_at, revoked_at", (name_or_id, name_or_id)).fetchone()
    if row is None:
        raise ApiKeyError(f"no key in force is named or has the id {name_or_id!r}")
    return _record(row)


def authenticate(conn: Conn, key: str) -> Principal | None:
    """The principal of a valid key in force, else None (malformed, unknown, wrong or revoked)."""
    match = _KEY.match(key)
    if match is None:
        return None
    row = conn.execute("SELECT name, client, scopes, key_sha256 FROM civicsync.api_keys"
                       " WHERE key_id = %s AND revoked_at IS NULL", (match.group(1),)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[3]), _digest(key)):
        return None
    return Principal(match.group(1), str(row[0]), str(row[1]), frozenset(row[2]))
