"""Admin routes: list dead letters (admin:read) and replay them (admin:write).

A replay runs the same functions as ``civicsync dlq replay``: each CDC source's
:meth:`~civicsync.runtime.cdc.CdcWorker.replay_now` and, for batch flows,
:func:`~civicsync.deadletters.batch.replay_batch_dead_letters`. One replay runs at a time per process.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, Depends, Query, Security
from pydantic import BaseModel, ConfigDict, Field, model_validator

from civicsync.api.auth import require_scope
from civicsync.api.context import ApiContext, context
from civicsync.api.errors import ApiError, FieldError, responses
from civicsync.runtime.dlq import replay_all

router = APIRouter(prefix="/api/v1/dead-letters", tags=["admin"])
_REF = re.compile(r"^([a-z_][a-z0-9_]*):(\d{1,18})$")


class DeadLetter(BaseModel):
    """A key a flow could not apply, with the error (never the row's values)."""

    id: str = Field(description="DATABASE:NUMBER, as `civicsync dlq list` shows it")
    database: str
    flow: str
    key: dict[str, Any]
    op: str | None
    kind: str
    error: str
    attempts: int
    status: str
    first_seen: datetime
    last_seen: datetime
    next_attempt_at: datetime | None


class DeadLetters(BaseModel):
    """Dead letters, oldest first."""

    items: list[DeadLetter]


class ReplayRequest(BaseModel):
    """Exactly one of: one dead letter by ``id``, every pending one of a ``flow``, or ``all``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(default=None, pattern=_REF.pattern, description="DATABASE:NUMBER")
    flow: str | None = Field(default=None, min_length=1, max_length=100, description="flow name or id (F3)")
    all: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplayRequest:
        if sum((self.id is not None, self.flow is not None, self.all)) != 1:
            raise ValueError("give exactly one of id, flow or all: true")
        return self


class ReplayResult(BaseModel):
    """What a replay did."""

    replayed: int = Field(description="dead letters that converged")
    still_pending: int = Field(description="pending dead letters of the replayed flows left")


def _flow_name(ctx: ApiContext, flow: str, field: str) -> str:
    try:
        return ctx.config.model.flow_name(flow)
    except KeyError:
        raise ApiError(422, f"no flow called {flow!r}", [FieldError(
            field=field, message=f"unknown flow; known: {', '.join(ctx.config.model.flows)}",
            type="unknown_reference")]) from None


def _rows(ctx: ApiContext, flows: list[str] | None, status: str | None, limit: int,
          ids: tuple[str, int] | None = None) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    for target in sorted({f.target.connection for f in ctx.config.model.flows.values()}):
        if ids is not None and ids[0] != target:
            continue
        with ctx.database("dead-letters", target) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                "SELECT dead_letter_id, flow, row_key AS key, op, error_kind AS kind, error, attempts, status,"
                " first_seen, last_seen, next_attempt_at FROM civicsync.dead_letters"
                " WHERE (%(flows)s::text[] IS NULL OR flow = ANY(%(flows)s))"
                " AND (%(status)s::text IS NULL OR status = %(status)s)"
                " AND (%(id)s::bigint IS NULL OR dead_letter_id = %(id)s) ORDER BY dead_letter_id LIMIT %(limit)s",
                {"flows": flows, "status": status, "id": ids[1] if ids else None, "limit": limit})
            found += [DeadLetter(id=f"{target}:{r.pop('dead_letter_id')}", database=target, **r)
                      for r in cur.fetchall()]
    return sorted(found, key=lambda d: d.first_seen)[:limit]


def _pending(ctx: ApiContext, flows: list[str] | None) -> int:
    total = 0
    for target in sorted({f.target.connection for f in ctx.config.model.flows.values()}):
        with ctx.database("dead-letters", target) as conn:
            row = conn.execute("SELECT count(*) FROM civicsync.dead_letters WHERE status = 'pending'"
                               " AND (%s::text[] IS NULL OR flow = ANY(%s))", (flows, flows)).fetchone()
        total += int(str(row[0])) if row else 0
    return total


@router.get("", response_model=DeadLetters, responses=responses(401, 403, 422, 500, 503),
            summary="Dead letters of every flow (keys and errors only)")
def list_dead_letters(
        ctx: Annotated[ApiContext, Depends(context)],
        _: Annotated[Any, Security(require_scope("admin:read"))],
        flow: Annotated[str | None, Query(min_length=1, max_length=100, description="flow name or id")] = None,
        status: Annotated[Literal["pending", "replayed", "discarded", "all"], Query()] = "pending",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeadLetters:
    """Pending dead letters (or those of ``status``), oldest first."""
    flows = [_flow_name(ctx, flow, "query.flow")] if flow else None
    return DeadLetters(items=_rows(ctx, flows, None if status == "all" else status, limit))


@router.post("/replay", response_model=ReplayResult, responses=responses(400, 401, 403, 404, 409, 413, 422, 500, 503),
             summary="Re-apply dead-lettered keys from the source's current rows")
def replay_dead_letters(request: Annotated[ReplayRequest, Body()], ctx: Annotated[ApiContext, Depends(context)],
                        _: Annotated[Any, Security(require_scope("admin:write"))]) -> ReplayResult:
    """Like ``civicsync dlq replay``: after the cause is fixed, re-read the keys from the source now."""
    ids: list[int] | None = None
    flows: list[str] | None = None
    if request.id is not None:
        match = _REF.match(request.id)
        assert match is not None
        found = _rows(ctx, None, "pending", 1, (match.group(1), int(match.group(2))))
        if not found:
            raise ApiError(404, f"no pending dead letter {request.id}")
        ids, flows = [int(match.group(2))], [found[0].flow]
    elif request.flow is not None:
        flows = [_flow_name(ctx, request.flow, "flow")]
    if not ctx.replay_lock.acquire(blocking=False):
        raise ApiError(409, "a replay is already running; try again when it has finished")
    try:
        counts = replay_all(ctx.config, flows, ids)
    finally:
        ctx.replay_lock.release()
    if counts.failed:
        raise ApiError(409, f"replayed {counts.replayed}; {counts.failed} dead letter(s) still cannot be applied "
                            "(their new errors are in GET /api/v1/dead-letters)")
    return ReplayResult(replayed=counts.replayed, still_pending=_pending(ctx, flows))
