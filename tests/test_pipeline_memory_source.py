"""One pipeline shape for every path (issue 12, Required 2): a second, in-memory change source plugs
into the same committer as the pgoutput stream and the Kafka consumer, and its changes reach a real
PostgreSQL target through the flow's own transform and masking. The committer's promises are
checked here against that real target: the checkpoint is written in the batch's transaction, never
moves back, a transient error (a terminated backend) is retried with the config's settings, a stop
wakes a retry wait, and a fenced batch commits nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from civicsync.config import LoadedConfig
from civicsync.config.models import slot_name
from civicsync.errors import CheckpointRegressionError, DatabaseUnavailableError, TransientError
from civicsync.events import ChangeEvent, SourceInfo
from civicsync.pipeline.committer import Committer, Pipeline
from civicsync.pipeline.memory import MemoryLog, MemorySource
from civicsync.pipeline.source import Batch, Fenced, WorkerStopped
from civicsync.pipeline.target import EventTarget
from civicsync.reconcile import reconcile_flow
from fix_cdc import cdc_config
from fix_db import Deployment, q

NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
COLUMNS = ("document_id", "application_id", "doc_type", "file_name", "mime_type", "size_bytes", "storage_uri",
           "sha256", "uploaded_at")


def doc(op: str, document_id: int, doc_type: str = "INCOME_CERT", size: int = 100) -> ChangeEvent:
    """A change of the portal's application_documents (flow F7's source table), as a source sends it."""
    row: dict[str, str | None] = dict(zip(COLUMNS, (
        str(document_id), "100", doc_type, f"scan_{document_id}.pdf", "application/pdf", str(size),
        f"s3://portal-docs/{document_id}.pdf", "ab12", "2026-12-03 05:00:00+00"), strict=True))
    key = {"document_id": str(document_id)}
    info = SourceInfo("portal", "public", "application_documents", document_id, 0, NOW)
    if op == "d":
        return ChangeEvent("d", row, None, info, key)
    return ChangeEvent(op, None, row, info, key)  # type: ignore[arg-type]


def retries(attempts: int, initial_delay: float) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        raw["retries"] = {"target_commit": {"attempts": attempts, "initial_delay": initial_delay}}
    return mutate


class HookedTarget(EventTarget):
    """The real event target, with a hook between apply and checkpoint (where a crash hurts most)."""

    after_apply: Callable[[EventTarget], None] | None = None

    def apply(self, batch: Batch) -> None:
        super().apply(batch)
        if self.after_apply is not None:
            self.after_apply(self)


def terminate(dep: Deployment) -> Callable[[EventTarget], None]:
    """Kill the target session's backend for real (as an admin would, or a failover does)."""
    def kill(target: EventTarget) -> None:
        pid = target.connection().info.backend_pid
        q(dep, "warehouse", "SELECT pg_terminate_backend(%s)", pid)
    return kill


@pytest.fixture()
def clean(deployment: Deployment) -> Iterator[Deployment]:
    q(deployment, "warehouse", "DELETE FROM application_documents")
    q(deployment, "warehouse", "DELETE FROM civicsync.cdc_positions WHERE slot LIKE 'memory%%'")
    yield deployment


def make(config: LoadedConfig, log: MemoryLog, stop: threading.Event | None = None,
         start: int = 0) -> tuple[MemorySource, HookedTarget, Pipeline]:
    source = MemorySource(log, start=start, max_changes=3)
    target = HookedTarget(config, ["document_metadata"], purpose="memory-test")
    committer = Committer(target, config.model.retries.target_commit, stop or threading.Event(), "memory log")
    return source, target, Pipeline(source, committer)


def documents(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT document_id, doc_type, size_bytes FROM application_documents ORDER BY 1")


def checkpoint(dep: Deployment, stream: str = "memory") -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT lsn FROM civicsync.cdc_positions WHERE slot = %s", stream)


def test_a_memory_source_flows_end_to_end_with_masking_and_checkpoint(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep)
    log = MemoryLog()
    log.append(doc("c", 1), doc("c", 2, "passport scan of Asha"), doc("c", 3), doc("u", 1, size=200),
               doc("d", 3), doc("c", 4, "RATION_CARD"), doc("u", 2, "PHOTO", 50))
    source, target, pipeline = make(config, log)
    try:
        while source.acknowledged < len(log):
            assert pipeline.step(0.5) is not None
    finally:
        target.close()
    # The flow's own transform ran: unknown document kinds masked to OTHER, file names never carried.
    assert documents(dep) == [(1, "INCOME_CERT", 200), (2, "PHOTO", 50), (4, "RATION_CARD", 100)]
    assert q(dep, "warehouse", "SELECT count(*) FROM application_documents WHERE doc_type = 'OTHER'") == [(0,)]
    dump = q(dep, "warehouse", "SELECT string_agg(t::text, ' ') FROM application_documents t")[0][0]
    assert "scan_" not in dump and "s3://" not in dump
    assert checkpoint(dep) == [(7,)] and source.acknowledged == 7


def test_masking_of_a_memory_source_change(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep)
    log = MemoryLog()
    log.append(doc("c", 5, "passport scan of Asha"))
    _source, target, pipeline = make(config, log)
    try:
        pipeline.step(0.5)
    finally:
        target.close()
    assert documents(dep) == [(5, "OTHER", 100)]


def test_a_session_killed_between_apply_and_commit_leaves_neither_rows_nor_checkpoint(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep, retries(1, 0.01))  # one attempt: the kill is final
    log = MemoryLog()
    log.append(doc("c", 1), doc("c", 2))
    source, target, pipeline = make(config, log)
    target.after_apply = terminate(dep)
    try:
        with pytest.raises(DatabaseUnavailableError):
            pipeline.step(0.5)
    finally:
        target.close()
    assert documents(dep) == [] and checkpoint(dep) == []
    assert source.acknowledged == 0  # never acknowledged: the next start reads it again


def test_a_transient_target_error_is_retried_with_the_configs_settings(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep, retries(3, 0.05))
    log = MemoryLog()
    log.append(doc("c", 1), doc("c", 2))
    source, target, pipeline = make(config, log)
    kill = terminate(dep)
    kills = []

    def once(t: EventTarget) -> None:
        if not kills:
            kills.append(1)
            kill(t)

    target.after_apply = once
    try:
        assert pipeline.step(0.5) is not None
    finally:
        target.close()
    assert pipeline.committer.retries == 1 and pipeline.committer.stalled is None
    assert source.suspended == 1  # the source was let go of while the committer waited
    assert [r[0] for r in documents(dep)] == [1, 2] and checkpoint(dep) == [(2,)]


def test_retries_give_up_after_the_configured_attempts(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep, retries(2, 0.01))
    log = MemoryLog()
    log.append(doc("c", 1))
    _source, target, pipeline = make(config, log)
    target.after_apply = terminate(dep)
    try:
        with pytest.raises(TransientError):
            pipeline.step(0.5)
    finally:
        target.close()
    assert pipeline.committer.retries == 1 and documents(dep) == [] and checkpoint(dep) == []


def test_a_stop_wakes_the_retry_wait_at_once(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep, retries(5, 60.0))  # a minute's wait, unless the stop wakes it
    stop = threading.Event()
    log = MemoryLog()
    log.append(doc("c", 1))
    source, target, pipeline = make(config, log, stop)
    target.after_apply = terminate(dep)
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(WorkerStopped):
            pipeline.step(0.5)
    finally:
        target.close()
    assert time.monotonic() - started < 5
    assert documents(dep) == [] and checkpoint(dep) == [] and source.acknowledged == 0


def test_the_checkpoint_refuses_to_move_back(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep)
    log = MemoryLog()
    log.append(doc("c", 1), doc("c", 2), doc("c", 3))
    _source, target, pipeline = make(config, log)
    try:
        pipeline.step(0.5)
        assert checkpoint(dep) == [(3,)]
        # The committer refuses before writing anything ...
        with pytest.raises(CheckpointRegressionError) as refused:
            pipeline.committer.commit(Batch([doc("c", 9)], {"memory": 2}))
        assert (refused.value.stored, refused.value.lsn) == (3, 2)
        # ... and so does the target's store, for a committer that does not know the stored position:
        # the batch's rows roll back with the refused checkpoint.
        fresh = Committer(target, config.model.retries.target_commit, threading.Event(), "another")
        with pytest.raises(CheckpointRegressionError):
            fresh.commit(Batch([doc("c", 9)], {"memory": 1}))
    finally:
        target.close()
    assert [r[0] for r in documents(dep)] == [1, 2, 3] and checkpoint(dep) == [(3,)]


def test_a_fenced_batch_commits_nothing_and_the_source_rewinds(clean: Deployment) -> None:
    dep = clean
    config = cdc_config(dep)
    log = MemoryLog()
    log.append(doc("c", 1), doc("c", 2), doc("c", 3), doc("c", 4))
    source, target, pipeline = make(config, log)

    def fence(_t: EventTarget) -> None:
        raise Fenced("memory: another worker took the log over")

    try:
        assert pipeline.step(0.5) is not None  # 1-3 committed
        target.after_apply = fence
        assert pipeline.step(0.5) is None  # 4: fenced after its rows were written, so rolled back
        assert pipeline.fenced == 1 and source.rewinds == 1 and source.read_to == source.acknowledged == 3
        assert [r[0] for r in documents(dep)] == [1, 2, 3] and checkpoint(dep) == [(3,)]
        target.after_apply = None
        assert pipeline.step(0.5) is not None  # delivered again from what the target holds
    finally:
        target.close()
    assert [r[0] for r in documents(dep)] == [1, 2, 3, 4] and checkpoint(dep) == [(4,)]


def test_reconciliation_sees_what_the_memory_source_applied_as_the_flows_rules_derive_it(clean: Deployment) -> None:
    # The source table holds the rows the log's changes lead to; the pipeline applies the changes;
    # the flow's reconciliation (untouched, reading the source table) then finds nothing to repair.
    dep = clean
    citizen = "00000000-0000-4000-8000-00000000e1e1"
    q(dep, "citizen", "DELETE FROM application_documents")
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone) VALUES (%s, 'Asha', '9876543210')"
                      " ON CONFLICT DO NOTHING", citizen)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S1', 'One', 'C',"
                      " 'OPEN') ON CONFLICT DO NOTHING")
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status) VALUES"
                      " (100, %s, 1, 'SUBMITTED') ON CONFLICT DO NOTHING", citizen)
    config = cdc_config(dep)
    # The log stands in for the portal connection's change stream: its checkpoint is that stream's
    # position (reconciliation waits for one before it compares an event-path flow).
    log = MemoryLog(stream=slot_name(config.model, "citizen"))
    log.append(doc("c", 1), doc("c", 2, "passport scan of Asha"), doc("u", 1, size=200), doc("c", 3), doc("d", 3))
    for event in (doc("c", 1, size=200), doc("c", 2, "passport scan of Asha")):
        assert event.after is not None
        q(dep, "citizen", f"INSERT INTO application_documents ({', '.join(COLUMNS)}) VALUES"
                          f" ({', '.join(['%s'] * len(COLUMNS))})", *[event.after[c] for c in COLUMNS])
    source, target, pipeline = make(config, log)
    try:
        while source.acknowledged < len(log):
            pipeline.step(0.5)
    finally:
        target.close()
    assert documents(dep) == [(1, "INCOME_CERT", 200), (2, "OTHER", 100)]
    result = reconcile_flow(config, "document_metadata")
    assert result.error is None and result.found == 0, result.as_dict()
    assert result.source_rows == result.target_rows == 2
