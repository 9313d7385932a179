"""F9: store forecasts from the ML service, idempotently, newest model version first.

The table holds one forecast per (scheme_id, district, horizon_date). For each incoming forecast:

- no row yet: **created**;
- a row from an older model version: **replaced**;
- a row from the same model version with the same figures: **unchanged** (nothing written; a resend);
- a row from the same model version with other figures: **409** for the whole request (the idempotency
  key (scheme_id, district, horizon_date, model_version) was reused for something else);
- a row from a newer model version: **superseded** (nothing written: a late or replayed older
  forecast never overwrites a newer one, like a late decision never regresses an application).

Model versions compare in natural order: runs of digits as numbers, letters case-insensitively
(``v2.10`` > ``v2.9``, ``2024-06-01`` > ``2024-05-30``). A request is one transaction.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from psycopg import sql

from civicsync.api.context import ApiContext, Conn
from civicsync.api.errors import ApiError, FieldError
from civicsync.api.models import Forecast, ForecastOutcome, ForecastResult
from civicsync.api.writes import columns, item_field, lock_keys, plain, require_references
from civicsync.config.service import ForecastTarget
from civicsync.sqlnames import table_ident

_PART = re.compile(r"\d+|[A-Za-z]+")

Key = tuple[Any, str, Any]  # scheme_id (of the configured type), district, horizon_date
Stored = tuple[str, Decimal | None, Decimal | None]  # model_version, expected_processing_days, demand_index


def version_order(version: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key of a model version (natural order; the text itself breaks ties)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in _PART.findall(version)), version


def _decide(item: Forecast, stored: Stored | None) -> ForecastOutcome | None:
    """The outcome for ``item`` against the stored row; None for a conflicting resend."""
    if stored is None:
        return "created"
    version, days, index = stored
    if version == item.model_version:
        return "unchanged" if (days, index) == (item.expected_processing_days, item.demand_index) else None
    return "replaced" if version_order(item.model_version) > version_order(version) else "superseded"


def write_forecasts(ctx: ApiContext, items: list[Forecast], batch: bool) -> list[ForecastResult]:
    """Apply the forecasts in one transaction; returns one result per item, in order."""
    target = ctx.settings.forecasts
    c = target.columns
    table = table_ident(target.table)
    key_type = sql.SQL(ctx.settings.scheme.type)
    with ctx.database("forecasts") as conn, conn.transaction():
        require_references(conn, ctx.settings.scheme,
                           [(item_field(i, batch, "scheme_id"), f.scheme_id) for i, f in enumerate(items)], "scheme")
        keys: list[Key] = [(f.scheme_id, f.district, f.horizon_date) for f in items]
        lock_keys(conn, (f"{target.table}|{k[0]}|{k[1]}|{k[2].isoformat()}" for k in keys))
        rows = conn.execute(sql.SQL(
            "SELECT {} FROM {} t JOIN unnest(%s::{}[], %s::text[], %s::date[]) AS k(s, d, h)"
            " ON (t.{}, t.{}, t.{}) = (k.s, k.d, k.h)").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(n)) for n in (
                *target.key(), c.model_version, c.expected_processing_days, c.demand_index)),
            table, key_type, *(sql.Identifier(n) for n in target.key())),
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])).fetchall()
        current: dict[Key, Stored] = {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in rows}
        results: list[ForecastResult] = []
        writes: dict[Key, Forecast] = {}
        conflicts: list[FieldError] = []
        for i, (item, key) in enumerate(zip(items, keys, strict=True)):
            outcome = _decide(item, current.get(key))
            if outcome is None:
                conflicts.append(FieldError(
                    field=item_field(i, batch, "model_version"), type="idempotency_conflict",
                    message=f"a different forecast for this scheme, district and date was stored under model "
                            f"version {item.model_version}; send a new model version to replace it"))
                continue
            if outcome in ("created", "replaced"):
                current[key] = (item.model_version, item.expected_processing_days, item.demand_index)
                writes[key] = item
            results.append(ForecastResult(scheme_id=plain(item.scheme_id), district=item.district,
                                          horizon_date=item.horizon_date, model_version=item.model_version,
                                          outcome=outcome, current_model_version=current[key][0]))
        if conflicts:
            raise ApiError(409, "forecast(s) conflict with what is stored under the same model version; "
                                "nothing was written", conflicts)
        if writes:
            _upsert(conn, target, list(writes.values()))
    return results


def _upsert(conn: Conn, target: ForecastTarget, forecasts: list[Forecast]) -> None:
    """Insert or replace the forecasts (the caller decided which may be written)."""
    c = target.columns
    values = (c.scheme_id, c.district, c.horizon_date, c.expected_processing_days, c.demand_index, c.model_version)
    replaced = (c.expected_processing_days, c.demand_index, c.model_version, c.received_at)
    with conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "INSERT INTO {} ({}, {}) VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp())"
            " ON CONFLICT ({}) DO UPDATE SET {}").format(
            table_ident(target.table), columns(values), sql.Identifier(c.received_at), columns(target.key()),
            sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in replaced)),
            [(f.scheme_id, f.district, f.horizon_date, f.expected_processing_days, f.demand_index,
              f.model_version) for f in forecasts])
