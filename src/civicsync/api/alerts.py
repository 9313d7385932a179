"""F10: store ML alerts for the portal, idempotently on the caller's own alert id.

An alert's identity is (API client, the caller's ``alert_id``); the table keeps both (``source``,
``source_alert_id``, unique together). A resend with the same id and the same content answers with
the alert's portal id again and writes nothing (**duplicate**); the same id with different content
is a **409**. Alerts target one citizen (``citizen_id``) or are broadcast (no citizen, optionally a
district and/or a scheme). Unknown citizens or schemes are refused with 422 naming the field. A
request is one transaction: all of its alerts are stored, or none.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from civicsync.api.context import ApiContext
from civicsync.api.errors import ApiError, FieldError
from civicsync.api.keys import Principal
from civicsync.api.models import Alert, AlertResult
from civicsync.api.writes import columns, item_field, lock_keys, require_references
from civicsync.sqlnames import table_ident

_CONTENT = ("citizen_id", "scheme_id", "district", "severity", "alert_type", "message", "expires_at")
"""What an alert says: a resend must repeat all of it (the target columns come from the config)."""


def _content(alert: Alert) -> tuple[Any, ...]:
    return tuple(getattr(alert, c) for c in _CONTENT)


def _differences(a: tuple[Any, ...], b: tuple[Any, ...]) -> list[str]:
    return [c for c, x, y in zip(_CONTENT, a, b, strict=True) if x != y]


def write_alerts(ctx: ApiContext, principal: Principal, items: list[Alert], batch: bool) -> list[AlertResult]:
    """Store the alerts in one transaction; returns one result per item, in order."""
    s = ctx.settings
    c = s.alerts.columns
    content = [c.content()[f] for f in _CONTENT]
    table = table_ident(s.alerts.table)
    with ctx.database("alerts") as conn, conn.transaction():
        require_references(conn, s.citizen,
                           [(item_field(i, batch, "citizen_id"), a.citizen_id) for i, a in enumerate(items)], "citizen")
        require_references(conn, s.scheme,
                           [(item_field(i, batch, "scheme_id"), a.scheme_id) for i, a in enumerate(items)], "scheme")
        lock_keys(conn, (f"{s.alerts.table}|{principal.client}|{a.alert_id}" for a in items))
        rows = conn.execute(sql.SQL("SELECT {}, {}, {} FROM {} WHERE {} = %s AND {} = ANY(%s)").format(
            sql.Identifier(c.alert_id), sql.Identifier(c.portal_id), columns(content), table,
            sql.Identifier(c.client), sql.Identifier(c.alert_id)),
            (principal.client, [a.alert_id for a in items])).fetchall()
        known: dict[str, tuple[int | None, tuple[Any, ...]]] = {str(r[0]): (int(r[1]), tuple(r[2:])) for r in rows}
        new: list[Alert] = []
        conflicts: list[FieldError] = []
        for i, alert in enumerate(items):
            if alert.alert_id not in known:
                known[alert.alert_id] = (None, _content(alert))
                new.append(alert)
                continue
            differ = _differences(known[alert.alert_id][1], _content(alert))
            if differ:
                conflicts.append(FieldError(
                    field=item_field(i, batch, "alert_id"), type="idempotency_conflict",
                    message=f"alert id {alert.alert_id} was sent before with other content "
                            f"({', '.join(differ)} differ); use a new alert id for a new alert"))
        if conflicts:
            raise ApiError(409, "alert id(s) reused for different alerts; nothing was written", conflicts)
        created: dict[str, int] = {}
        if new:
            with conn.cursor() as cur:
                cur.executemany(sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES (%s, %s, {}) RETURNING {}, {}").format(
                    table, sql.Identifier(c.client), sql.Identifier(c.alert_id), columns(content),
                    sql.SQL(", ").join(sql.Placeholder() for _ in content), sql.Identifier(c.alert_id),
                    sql.Identifier(c.portal_id)),
                    [(principal.client, a.alert_id, *_content(a)) for a in new], returning=True)
                while True:
                    row = cur.fetchone()
                    if row is not None:
                        created[str(row[0])] = int(row[1])
                    if not cur.nextset():
                        break
    results = []
    seen: set[str] = set()
    for alert in items:
        stored = known[alert.alert_id][0]
        portal_id = stored if stored is not None else created[alert.alert_id]
        outcome = "created" if stored is None and alert.alert_id not in seen else "duplicate"
        seen.add(alert.alert_id)
        results.append(AlertResult(alert_id=alert.alert_id, portal_alert_id=portal_id, outcome=outcome))
    return results
