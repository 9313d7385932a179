"""One reconciliation run: plan, checksum phase, verify (with re-checks), repair, record.

Method ``checksum`` (the flow's rules compile to SQL and its policy is a per-row equality): range
checksums in both databases find candidate keys (:mod:`~civicsync.reconcile.checksum`), which the
verify phase decides. Method ``full`` (a rule has no SQL equivalent, the target owns rows the source
does not derive, a forward-only lifecycle, several source rows per key, or so much differs that
checking everything is cheaper): every source row goes through the chain and the verify phase
compares it all in one pass in the target database, at about the cost of one batch run of the flow.

A difference is reported only once it is *settled*: a re-check reads both sides afresh and sees it
again identically (same class and columns, same derived row, same target row), and the source rows of
its key did not change (their row versions) between the re-check's read of the source and its read of
the target. For event-path flows whose worker is running, a re-check also waits (at most
``reconcile.settle_seconds``) between the two reads until the worker has applied everything the source
had committed when it was read. So a row changing while it is compared, an event still in flight, or
an event applied before the snapshot it is compared with could see it, is not reported; a key that
keeps changing through every re-check (up to three) is only counted in the notes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from civicsync.config import LoadedConfig
from civicsync.config.models import slot_name
from civicsync.control.store import read_position as store_position
from civicsync.control.store import read_watermark
from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.errors import CivicsyncError
from civicsync.errors import ReconcileFailedError as ReconcileFailedError  # re-exported: it lives in the one tree
from civicsync.reconcile import store
from civicsync.reconcile.catalog import SourceCatalog, load_catalog
from civicsync.reconcile.checksum import Comparison, Side, TooDifferent, sample_bounds, snapshot
from civicsync.reconcile.compile import NotCompilable, compile_rules
from civicsync.reconcile.derive import Deriver
from civicsync.reconcile.plan import Key, Plan, build_plan
from civicsync.reconcile.relations import Relations
from civicsync.reconcile.repair import repair as repair_keys
from civicsync.reconcile.repair import repairable
from civicsync.reconcile.verify import Difference, Verifier

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[Any, ...]]
Progress = Callable[[str, int, int | None], None]
ROUNDS = 4  # the first look and up to three re-checks


@dataclass
class ReconcileResult:
    """The outcome of one reconciliation run (JSON-ready through :meth:`as_dict`)."""

    flow: str
    flow_id: str
    repair: bool
    started_at: datetime
    run_id: int | None = None
    method: str = "checksum"
    seconds: float = 0.0
    source_rows: int = 0
    target_rows: int = 0
    ranges: int = 0
    candidates: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(store.CLASSES, 0))
    repaired: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    differences: list[Difference] = field(default_factory=list, repr=False)
    repaired_keys: set[Key] = field(default_factory=set, repr=False)
    key_columns: tuple[str, ...] = ()
    sample: int = 10
    skipped: bool = False  # an event-path flow whose initial snapshot has not finished: nothing compared

    @property
    def found(self) -> int:
        """Differences found, all classes."""
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        """Differences found and not repaired."""
        return self.found - self.repaired

    @property
    def ok(self) -> bool:
        """No error, and source and target agree now (nothing found, or everything repaired)."""
        return self.error is None and self.remaining == 0

    @property
    def status(self) -> str:
        """failed, skipped (the initial snapshot has not finished), equal, repaired (everything found
        was repaired) or different."""
        if self.error is not None:
            return "failed"
        if self.skipped:
            return "skipped"
        if self.found == 0:
            return "equal"
        return "repaired" if self.remaining == 0 else "different"

    def key_dict(self, key: Key) -> dict[str, str | None]:
        """A key as {column: value} (values as text)."""
        return dict(zip(self.key_columns, key, strict=True))

    def samples(self) -> dict[str, list[dict[str, Any]]]:
        """Up to ``sample`` keys per class, with their differing columns and whether they were repaired."""
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in store.CLASSES}
        for d in self.differences:
            if len(out[d.kind]) < self.sample:
                out[d.kind].append({"key": self.key_dict(d.key), "columns": list(d.columns),
                                    "repaired": d.key in self.repaired_keys})
        return out

    def summary(self) -> dict[str, Any]:
        """What civicsync.reconcile_runs records."""
        return {"status": self.status, "method": self.method, "source_rows": self.source_rows,
                "target_rows": self.target_rows, **self.counts, "repaired": self.repaired, "notes": self.notes,
                "error": self.error}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"flow": self.flow, "id": self.flow_id, "run_id": self.run_id, "ok": self.ok,
                "started_at": self.started_at.isoformat(), "seconds": round(self.seconds, 3),
                "repair": self.repair, "ranges": self.ranges, "candidates": self.candidates, **self.summary(),
                "repaired_by_class": {c: sum(1 for d in self.differences if d.kind == c and d.key in self.repaired_keys)
                                      for c in store.CLASSES},
                "samples": self.samples()}

    def raise_for_error(self) -> ReconcileResult:
        """Raise if the run failed; return self otherwise."""
        if self.error is not None:
            raise ReconcileFailedError(f"reconciling flow {self.flow}: {self.error}")
        return self


def reconcile_flow(config: LoadedConfig, flow: str, *, repair: bool = False, sample: int | None = None,
                   progress: Progress | None = None) -> ReconcileResult:
    """Reconcile flow ``flow`` (config name or id such as 'F2'): find every difference between what its
    rules derive from the source and what its target holds, by class, and with ``repair`` fix them
    through the flow's own apply path. The run is recorded in the target's ``civicsync.reconcile_runs``
    and exported as metrics. An unknown flow or an unreachable target raises; a failure after the run
    is recorded is returned in ``error``."""
    plan = build_plan(config, flow)
    result = ReconcileResult(plan.name, plan.flow.id, repair, datetime.now(UTC), notes=list(plan.notes),
                             key_columns=plan.key, sample=plan.flow.reconcile.sample if sample is None else sample)
    started = time.monotonic()
    target = plan.flow.target.connection
    with connect(config.dsn(target, "reconcile"), purpose=f"reconcile:{plan.name}", autocommit=True,
                 label=target) as control:
        waiting = _snapshot_pending(config, plan, control)
        if waiting:
            # Before the event path's initial snapshot has finished, every row not yet copied would be
            # "missing" (and a repair would race the snapshot): nothing is compared, nothing recorded.
            result.skipped = True
            result.notes.append(waiting)
            log.info("flow %s: reconciliation skipped: %s", plan.name, waiting)
            return result
        with mapped_errors(f"reconciling flow {plan.name}: {target} (target)"):
            result.run_id = store.start(control, plan.name, result.method, repair)
        try:
            _Run(config, plan, result, progress or _silent).execute()
        except CivicsyncError as exc:
            result.error = str(exc)
        except BaseException as exc:  # a bug or an interrupt: still close the record, then let it out
            result.error = f"{type(exc).__name__}: {exc}"
            _record(control, result)
            raise
        _record(control, result, started)
    store.observe(plan.name, result.counts, result.repaired, result.seconds)
    log.info("flow %s: reconciliation %s: %s", plan.name, result.run_id, result.summary())
    return result


def _snapshot_pending(config: LoadedConfig, plan: Plan, control: Conn) -> str | None:
    """Why an event-path flow cannot be compared yet (its worker's initial snapshot has not finished:
    the slot has no position in the target), or None."""
    flow = plan.flow
    source = flow.source.connection
    if not flow.streams or config.model.connections[source].capture.snapshot == "never":
        return None
    slot = slot_name(config.model, source)
    with mapped_errors(f"reconciling flow {plan.name}: reading the position of slot {slot}"):
        if store_position(control, slot) > 0:
            return None
    return (f"skipped: the event path's initial snapshot of {source} (slot {slot}) has not finished, so rows not "
            "yet copied are not differences; the first reconciliation after it compares")


def _record(control: Conn, result: ReconcileResult, started: float | None = None) -> None:
    if started is not None:
        result.seconds = time.monotonic() - started
    assert result.run_id is not None
    with mapped_errors(f"recording reconciliation {result.run_id} of flow {result.flow}"):
        store.finish(control, result.run_id, result.summary(), (
            (d.kind, result.key_dict(d.key), list(d.columns), d.key in result.repaired_keys)
            for d in result.differences))


def _silent(phase: str, done: int, total: int | None) -> None:
    return None


class _Run:
    def __init__(self, config: LoadedConfig, plan: Plan, result: ReconcileResult, progress: Progress) -> None:
        self.config, self.plan, self.result, self.progress = config, plan, result, progress
        self.window: sql.Composable | None = None
        self.upper_day: str | None = None

    def execute(self) -> None:
        flow = self.plan.flow
        with connect(self.config.dsn(flow.source.connection, "reconcile"), purpose=f"reconcile:{self.plan.name}",
                     autocommit=True, label=flow.source.connection) as src, \
                connect(self.config.dsn(flow.target.connection, "reconcile"), purpose=f"reconcile:{self.plan.name}",
                        label=flow.target.connection) as tgt:
            self.src, self.tgt = src, tgt
            with mapped_errors(f"reconciling flow {self.plan.name}"):
                self._run()

    def _run(self) -> None:
        facts = load_catalog(self.src, self.tgt, self.plan)
        self.target_types = facts.source.target_types
        self._set_window()
        deriver = Deriver(self.config, self.plan, facts.source.source_types, self.window, self.upper_day)
        verifier = Verifier(self.plan, deriver, facts.layout, self.upper_day)
        units = self._candidates(facts.source, facts.layout, facts.collatable)
        self.progress("verify", 0, None)
        found, counts = self._settled(verifier, units)
        self.result.differences = found
        self.result.counts = {c: counts.get(c, 0) for c in store.CLASSES}
        self.progress("verify", len(found), len(found))
        if self.result.repair and any(repairable(self.plan, d) for d in found):
            self._repair(verifier)

    # ------------------------------------------------------------------ set-up

    def _set_window(self) -> None:
        """Batch flows are compared as of their last run: an incremental flow's source rows at or past its
        watermark are the next run's business; an aggregate covers the days it has aggregated."""
        flow = self.plan.flow
        mark = read_watermark(self.tgt, self.plan.name) if flow.batches and not flow.streams else None
        self.tgt.rollback()
        if flow.aggregate is not None:
            self.upper_day = mark or datetime.now(UTC).date().isoformat()
            self.result.notes.append(f"days before {self.upper_day} are compared (every day the flow has aggregated; "
                                     "later days are the next run's)")
        elif flow.incremental is not None and mark is not None:
            op = "<=" if flow.incremental.guard == "none" else "<"
            self.window = sql.SQL("s.{} {} {}").format(sql.Identifier(flow.incremental.column), sql.SQL(op),
                                                       sql.Literal(mark))
            self.result.notes.append(f"source rows changed since the last run ({flow.incremental.column} {op} "
                                     f"{mark} is compared) are the next run's, not differences")

    # ------------------------------------------------------------------ checksum phase

    def _candidates(self, catalog: SourceCatalog, layout: list[str], collatable: bool) -> list[Key] | None:
        """The units worth verifying, or None: compare everything (method full)."""
        plan = self.plan
        reason = plan.full_reason
        derivation = None
        if reason is None and plan.unit != "day":
            try:
                derivation = compile_rules(plan, catalog, self.config.secrets, self.window)
            except NotCompilable as exc:
                reason = str(exc)
        reason = reason or self._unresolvable(catalog)
        if reason is not None:
            self._full(reason)
            return None
        relations = Relations(plan, dict(catalog.target_types), collatable, derivation, layout, self.upper_day)
        for name, value in derivation.settings if derivation else ():
            self.src.execute("SELECT set_config(%s, %s, false)", (name, value))
        bounds = sample_bounds(self.tgt, plan.flow.target.table, plan.key[0], relations.collate,
                               f"sampling {plan.flow.target.table}")
        self.tgt.rollback()
        with snapshot(self.src), snapshot(self.tgt):
            source = Side(self.src, relations.source, relations.names, plan.key, relations.lead_of("d"),
                          relations.lead_type, f"flow {plan.name}: checksums on {plan.flow.source.connection}")
            target = Side(self.tgt, relations.target, relations.names, plan.key, relations.lead_of("d"),
                          relations.lead_type, f"flow {plan.name}: checksums on {plan.flow.target.connection}")
            try:
                outcome = Comparison(source, target, self.progress).run(bounds)
            except TooDifferent as exc:
                self._full(str(exc))
                return None
        self.result.source_rows, self.result.target_rows = outcome.source_rows, outcome.target_rows
        self.result.ranges, self.result.candidates = outcome.ranges, len(outcome.candidates)
        return sorted({plan.unit_of(k) for k in outcome.candidates}, key=str)

    def _unresolvable(self, catalog: SourceCatalog) -> str | None:
        types = sorted({catalog.target_types[c] for c in self.plan.staged})
        missing = [str(r[0]) for r in self.src.execute(
            "SELECT t FROM unnest(%s::text[]) t WHERE to_regtype(t) IS NULL", (types,))]
        return f"target type(s) {', '.join(missing)} do not exist in the source database" if missing else None

    def _full(self, reason: str) -> None:
        self.result.method = "full"
        self.result.notes.append(f"method full (every source row through the chain): {reason}")

    # ------------------------------------------------------------------ verify phase

    def _settled(self, verifier: Verifier, units: list[Key] | None) -> tuple[list[Difference], dict[str, int]]:
        """The differences that hold still across re-checks, and their counts per class."""
        if units is not None and not units:
            return [], {}  # the checksums agree everywhere
        verdict = verifier.verify(self.src, self.tgt, units)
        if units is None:
            self.result.source_rows, self.result.target_rows = verdict.source_rows, verdict.target_rows
        total = sum(verdict.counts.values())
        if total > len(verdict.differences):
            self.result.notes.append(f"{total:,} differences: the first {len(verdict.differences):,} are recorded "
                                     "(and repaired), none re-checked; a target this different wants a re-sync")
            return verdict.differences, verdict.counts
        if not self.plan.invertible:
            self.result.notes.append("differences are not re-checked (the key cannot be read back by source columns)")
            return verdict.differences, verdict.counts
        previous = {(d.kind, d.key): d for d in verdict.differences}
        current: dict[tuple[str, Key], Difference] = {}
        settled: dict[tuple[str, Key], Difference] = {}
        for _ in range(ROUNDS - 1):
            if not previous:
                return [], {}
            again = verifier.verify(self.src, self.tgt, sorted({self.plan.unit_of(k) for _, k in previous}, key=str),
                                    wait=self._wait)
            current = {(d.kind, d.key): d for d in again.differences}
            settled = {k: d for k, d in current.items()
                       if previous.get(k) == d and self.plan.unit_of(d.key) not in again.moved}
            if len(settled) == len(current):
                break
            previous = current
        if len(current) > len(settled):
            self.result.notes.append(f"{len(current) - len(settled)} keys kept changing while they were compared; "
                                     "not reported (reconcile again)")
        found = list(settled.values())
        counts: dict[str, int] = {}
        for d in found:
            counts[d.kind] = counts.get(d.kind, 0) + 1
        return found, counts

    def _wait(self, lsn: int) -> None:
        """Let a running event path apply what the source had committed at ``lsn`` (bounded)."""
        flow = self.plan.flow
        if not flow.streams:
            return
        slot = slot_name(self.config.model, flow.source.connection)
        row = self.src.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if not (row and row[0]):
            return  # nothing applies events now: what differs, differs
        deadline = time.monotonic() + flow.reconcile.settle_seconds
        while time.monotonic() < deadline:
            row = self.tgt.execute("SELECT lsn FROM civicsync.cdc_positions WHERE slot = %s", (slot,)).fetchone()
            if row is not None and int(str(row[0])) >= lsn:
                return
            time.sleep(0.05)
        note = (f"the event path had not applied everything the source had committed within "
                f"{flow.reconcile.settle_seconds:g} s (reconcile.settle_seconds)")
        if note not in self.result.notes:
            self.result.notes.append(note)

    # ------------------------------------------------------------------ repair

    def _repair(self, verifier: Verifier) -> None:
        self.progress("repair", 0, None)
        plan, result = self.plan, self.result
        outcome = repair_keys(self.config, plan, result.differences, self.target_types, self.upper_day)
        if outcome.refused:
            first = next(iter(outcome.refused.values()))
            result.notes.append(f"{len(outcome.refused)} keys could not be repaired (e.g. {first})")
        fixed = set(outcome.applied)
        if fixed:
            # Check the work: only keys that no longer differ count as repaired.
            after = verifier.verify(self.src, self.tgt, sorted({plan.unit_of(k) for k in fixed}, key=str))
            still = {d.key for d in after.differences}
            if fixed & still:
                result.notes.append(f"{len(fixed & still)} keys still differ after their repair")
            fixed -= still
        result.repaired_keys = fixed
        result.repaired = sum(1 for d in result.differences if d.key in fixed)
        left = sum(1 for d in result.differences if not repairable(plan, d))
        if left:
            result.notes.append(f"{left} differences are not for repair to fix: rows the rules refuse wait in the "
                                "dead letters (fix the cause, then `civicsync dlq replay`); an update_only flow never "
                                "inserts rows")
        self.progress("repair", result.repaired, len(result.differences))
