"""Run one batch flow: read the source in one snapshot, transform, stage, validate, merge, commit.

One run is one target transaction: the rows, the recorded conflicts, the dead letters and the
flow's new watermark commit together or not at all, so a failed or interrupted run leaves the
target exactly as it was, and a retry or re-run neither skips nor double-applies. Transient
database errors retry the whole run with backoff; anything else fails it with a clear message.
Every run is recorded in ``civicsync.runs`` of the target database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from civicsync import metrics
from civicsync.apply.merge import MergeResult, MergeWriter, Scope
from civicsync.config import LoadedConfig
from civicsync.config.models import Flow, TableDecl
from civicsync.control import store
from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.db.origin import origin_for, setup_origin
from civicsync.errors import CivicsyncError, FatalError, RowRejectedError, TransientError, ValidationFailedError
from civicsync.errors import FlowBusyError as FlowBusyError  # re-exported: it lives in the one tree
from civicsync.extract.source import begin_snapshot, in_flight_horizon, stream_query, stream_rows
from civicsync.retry import with_retry
from civicsync.transform.aggregate import aggregate_query, output_columns
from civicsync.transform.chain import RowTransform, build_transform

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
PROGRESS_EVERY = 5_000
Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass
class RunResult:
    """The outcome of one batch run (all its attempts)."""

    flow: str
    flow_id: str
    run_id: int | None
    attempts: int
    counts: store.RunCounts
    seconds: float
    watermark: str | None = None
    error: CivicsyncError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> RunResult:
        """Raise the run's error if it failed; return self otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "flow": self.flow, "id": self.flow_id, "run_id": self.run_id, "ok": self.ok,
            "attempts": self.attempts, "seconds": round(self.seconds, 3), "watermark": self.watermark,
            **vars(self.counts), "error": None if self.error is None else str(self.error),
            # What a caller should do about a failure: "transient" may succeed if tried later, "fatal" won't.
            "error_kind": None if self.error is None else (
                "transient" if isinstance(self.error, TransientError) else "fatal"),
        }


@dataclass
class _Attempt:
    """Everything one attempt of a run needs."""

    config: LoadedConfig
    name: str
    flow: Flow
    source: TableDecl
    target: TableDecl
    run_id: int | None
    progress: ProgressFn | None
    rejects: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)
    rows_read: int = 0


def run_batch(config: LoadedConfig, name: str, *, progress: ProgressFn | None = None) -> RunResult:
    """Run the batch or aggregate flow ``name`` (config name or id such as 'F2') now."""
    name = config.model.flow_name(name)
    flow = config.model.flows[name]
    if not flow.batches:
        raise FatalError(f"flow {name} is a {flow.kind} flow, not a batch flow")
    conns = config.model.connections
    source = conns[flow.source.connection].tables[flow.source.table]
    target = conns[flow.target.connection].tables[flow.target.table]
    target_dsn = config.dsn(flow.target.connection, "batch")
    started = time.monotonic()
    run_id = _record_start(target_dsn, name)
    log.info("flow %s (%s): run %s started", name, flow.id, run_id)
    state = _Attempt(config, name, flow, source, target, run_id, progress)

    def attempt(n: int) -> tuple[store.RunCounts, str | None]:
        state.rejects.clear()
        state.rows_read = 0
        return _run_once(state)

    result = RunResult(name, flow.id, run_id, 0, store.RunCounts(), 0.0)
    try:
        (counts, watermark), attempts = with_retry(f"flow {name}", attempt, flow.retry)
        result.counts, result.watermark, result.attempts = counts, watermark, attempts
    except CivicsyncError as exc:
        result.error = exc
        result.attempts = getattr(exc, "attempts", 1)
        result.counts = store.RunCounts(rows_read=state.rows_read)
    result.seconds = time.monotonic() - started
    _record_finish(target_dsn, result)
    _observe(result)
    if result.ok:
        log.info("flow %s: run %s succeeded: %s", name, run_id, result.as_dict())
    else:
        log.error("flow %s: run %s failed: %s", name, run_id, result.error)
    return result


def _observe(result: RunResult) -> None:
    """Export the run to the Prometheus metrics (one place for every caller: CLI, scheduler, Airflow)."""
    flow = result.flow
    metrics.BATCH_DURATION.labels(flow).observe(result.seconds)
    metrics.BATCH_RUNS.labels(flow, "succeeded" if result.ok else "failed").inc()
    metrics.BATCH_LAST_FAILED.labels(flow).set(0 if result.ok else 1)
    if result.ok:
        metrics.BATCH_LAST_SUCCESS.labels(flow).set(time.time())
    c = result.counts
    for outcome, n in (("read", c.rows_read), ("written", c.rows_written), ("deleted", c.rows_deleted),
                       ("rejected", c.rows_rejected)):
        metrics.BATCH_ROWS.labels(flow, outcome).inc(n)
    if c.rows_rejected:
        metrics.DEAD_LETTERS_CREATED.labels(flow).inc(c.rows_rejected)  # rejected rows are dead-lettered
    if c.conflicts:
        metrics.CONFLICTS.labels(flow).inc(c.conflicts)


def _record_start(dsn: str, name: str) -> int | None:
    # Best effort: if the target is down the run still goes ahead (and will most likely fail
    # with a clear error); it just has no history row.
    try:
        with connect(dsn, purpose="run-history", autocommit=True) as conn:
            return store.start_run(conn, name)
    except CivicsyncError as exc:
        log.warning("could not record the start of a %s run: %s", name, exc)
        return None


def _record_finish(dsn: str, result: RunResult) -> None:
    if result.run_id is None:
        return
    try:
        with connect(dsn, purpose="run-history", autocommit=True) as conn:
            store.finish_run(conn, result.run_id, ok=result.ok, attempts=result.attempts, counts=result.counts,
                             error=None if result.error is None else str(result.error))
    except CivicsyncError as exc:
        log.warning("could not record the end of run %s: %s", result.run_id, exc)


def _lock_flow(conn: Conn, name: str, run_id: int | None) -> None:
    row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('civicsync:flow:' || %s))", (name,)).fetchone()
    if not (row and row[0]):
        raise FlowBusyError(f"flow {name}: another run is in progress (its lock is held); try again later")
    # Holding the lock, no other run of this flow is alive: any still marked running was abandoned
    # (its process died before it could record the outcome).
    conn.execute(
        "UPDATE civicsync.runs SET status = 'failed', finished_at = clock_timestamp(),"
        " error = 'abandoned: the process ended before recording an outcome; nothing of it was committed'"
        " WHERE flow = %s AND status = 'running' AND run_id IS DISTINCT FROM %s",
        (name, run_id),
    )


def _run_once(st: _Attempt) -> tuple[store.RunCounts, str | None]:
    flow = st.flow
    src_name, tgt_name = flow.source.connection, flow.target.connection
    with connect(st.config.dsn(src_name, "batch"), purpose=f"read:{st.name}", autocommit=True, label=src_name) as src, \
            connect(st.config.dsn(tgt_name, "batch"), purpose=f"write:{st.name}", label=tgt_name) as tgt:
        with mapped_errors(f"flow {st.name}: {tgt_name} (target)"):
            # Mark our writes so CDC flows reading this database never send them back.
            setup_origin(tgt, origin_for(st.config, f"batch_{st.name}"))
            _lock_flow(tgt, st.name, st.run_id)
            old_mark = store.read_watermark(tgt, st.name)
        if flow.kind == "aggregate":
            merged, new_mark = _aggregate(st, src, tgt, old_mark)
        else:
            merged, new_mark = _transfer(st, src, tgt, old_mark)
        with mapped_errors(f"flow {st.name}: {tgt_name} (target)"):
            store.add_dead_letters(tgt, st.name, st.rejects)
            if new_mark is not None:
                store.write_watermark(tgt, st.name, new_mark, st.run_id)
            tgt.commit()
        _end_snapshot(src, st.name)
    counts = store.RunCounts(rows_read=st.rows_read, rows_written=merged.written, rows_deleted=merged.deleted,
                             rows_rejected=len(st.rejects), conflicts=merged.conflicts)
    return counts, new_mark


def _end_snapshot(src: Conn, name: str) -> None:
    # The read-only snapshot is finished and every row was received (COPY completed), so a
    # source that vanishes now costs nothing: log it, never fail a committed run over it.
    try:
        src.execute("ROLLBACK")
    except psycopg.Error as exc:
        log.warning("flow %s: closing the source snapshot failed after commit (harmless): %s", name, exc)


def _incremental_bounds(st: _Attempt, src: Conn, old_mark: str | None) -> tuple[sql.Composable | None, str | None]:
    """The WHERE clause of this run's read and the watermark it leads to (call before the snapshot)."""
    inc = st.flow.incremental
    if inc is None:
        return None, None
    col = sql.Identifier(inc.column)
    # With the guard the mark is an exclusive upper bound of the last read, so the next read
    # starts at it inclusively; without, the mark is the last value read, so start after it.
    op = sql.SQL(">" if inc.guard == "none" else ">=")
    lower = None if old_mark is None else sql.SQL("{} {} {}").format(col, op, sql.Literal(old_mark))
    if inc.guard == "none":
        return lower, None  # the new mark is the snapshot's max, read after the snapshot is taken
    upper_value = in_flight_horizon(src)
    upper = sql.SQL("{} < {}").format(col, sql.Literal(upper_value))
    where = upper if lower is None else sql.SQL("{} AND {}").format(lower, upper)
    return where, upper_value


def _snapshot_max(st: _Attempt, src: Conn, where: sql.Composable | None, old_mark: str | None) -> str | None:
    assert st.flow.incremental is not None
    query = sql.SQL("SELECT max({col})::text FROM {table}").format(
        col=sql.Identifier(st.flow.incremental.column),
        table=sql.Identifier(*st.flow.source.table.split(".", 1)))
    if where is not None:
        query = query + sql.SQL(" WHERE ") + where
    row = src.execute(query).fetchone()
    return old_mark if row is None or row[0] is None else str(row[0])


def _transformed(st: _Attempt, transform: RowTransform, rows: Iterator[tuple[str | None, ...]]
                 ) -> Iterator[tuple[str | None, ...]]:
    """Apply the transform chain, counting rows and collecting rejects as the stream goes."""
    fail_fast = st.flow.on_invalid_row == "fail"
    limit = st.flow.validate_.max_rejected
    for row in rows:
        st.rows_read += 1
        if st.progress is not None and st.rows_read % PROGRESS_EVERY == 0:
            st.progress(st.rows_read)
        try:
            out = transform(row)
        except RowRejectedError as exc:
            key = transform.key_of(row)
            if fail_fast:
                raise ValidationFailedError(st.name, [f"row {key}: {exc}"]) from None
            st.rejects.append((key, exc.kind, str(exc)))
            if len(st.rejects) > limit:
                raise ValidationFailedError(
                    st.name, [f"more than {limit} rows broke the flow's rules (last: row {key}: {exc})"]) from None
            continue
        if out is not None:
            yield out
    if st.progress is not None:
        st.progress(st.rows_read)


def _transfer(st: _Attempt, src: Conn, tgt: Conn, old_mark: str | None) -> tuple[MergeResult, str | None]:
    flow = st.flow
    transform = build_transform(flow, st.source, st.config.secrets, datetime.now(UTC).isoformat(), dsn=st.config.dsn)
    writer = MergeWriter(tgt, st.name, flow, st.target, transform.target_columns)
    src_what = f"flow {st.name}: {flow.source.connection} (source)"
    tgt_what = f"flow {st.name}: {flow.target.connection} (target)"
    with mapped_errors(src_what):
        where, new_mark = _incremental_bounds(st, src, old_mark)
        begin_snapshot(src)
        if flow.incremental is not None and flow.incremental.guard == "none":
            new_mark = _snapshot_max(st, src, where, old_mark)
    with mapped_errors(tgt_what):
        writer.create_stage(direct_if_empty=True)
    # Source and target errors can surface from either side of this pipe; name both. closing():
    # if the pipe breaks, end the source COPY now (an abandoned one would hold its connection).
    with mapped_errors(f"flow {st.name}: copying {flow.source.table} → {flow.target.table}"), \
            closing(stream_rows(src, flow.source.table, transform.source_columns, where)) as rows:
        writer.stage_rows(_transformed(st, transform, rows))
    with mapped_errors(tgt_what):
        failures = writer.validate()
        if failures:
            raise ValidationFailedError(st.name, failures)
        return writer.merge(st.run_id), new_mark


def _aggregate(st: _Attempt, src: Conn, tgt: Conn, old_mark: str | None) -> tuple[MergeResult, str | None]:
    flow = st.flow
    agg = flow.aggregate
    assert agg is not None
    columns = output_columns(agg)
    writer = MergeWriter(tgt, st.name, flow, st.target, columns)
    with mapped_errors(f"flow {st.name}: {flow.source.connection} (source)"):
        begin_snapshot(src)
        row = src.execute(
            "SELECT (now() AT TIME ZONE 'UTC')::date::text, (%s::date - %s)::text",
            (old_mark, agg.time.lookback_days),
        ).fetchone()
        assert row is not None
        upper, lower = str(row[0]), (None if old_mark is None else str(row[1]))
    with mapped_errors(f"flow {st.name}: {flow.target.connection} (target)"):
        writer.create_stage()
    with mapped_errors(f"flow {st.name}: aggregating {flow.source.table} → {flow.target.table}"), \
            closing(stream_query(src, aggregate_query(flow, lower, upper))) as rows:
        writer.stage_rows(_counted(st, rows))
    scope = Scope(agg.time.target, lower)
    with mapped_errors(f"flow {st.name}: {flow.target.connection} (target)"):
        failures = writer.validate(scope=scope)
        if failures:
            raise ValidationFailedError(st.name, failures)
        return writer.merge(st.run_id, scope=scope), upper


def _counted(st: _Attempt, rows: Iterator[tuple[str | None, ...]]) -> Iterator[tuple[str | None, ...]]:
    for row in rows:
        st.rows_read += 1
        yield row
