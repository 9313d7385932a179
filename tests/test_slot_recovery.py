"""The replication stream's errors by SQLSTATE (issue 9 item 15) and a lost slot's recovery (item 19):
a permanent error stops the worker with a clear error and a metric; `civicsync cdc resync` recovers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from psycopg import sql

from civicsync import metrics
from civicsync.capture.replication import ReplicationBrokenError
from civicsync.config import LoadedConfig
from civicsync.config.models import publication_name, slot_name
from civicsync.config.service import Supervisor as SupervisorSettings
from civicsync.runtime.cdc import CdcWorker
from civicsync.runtime.state import ServiceState
from civicsync.runtime.supervisor import Supervisor
from fix_cdc import (
    RunningWorker,
    add_documents,
    cdc_config,
    cdc_raw,
    civicsync,
    cleanup,
    make_applications,
    running,
    wait_for,
    write_config,
)
from fix_db import Deployment, q


def _walsender_gone(dep: Deployment, slot: str) -> None:
    """Terminate the slot's walsender and wait until the slot is inactive."""
    def inactive() -> bool:
        q(dep, "citizen", "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                          " WHERE slot_name = %s AND active_pid IS NOT NULL", slot)
        return q(dep, "citizen", "SELECT active FROM pg_replication_slots WHERE slot_name = %s", slot) != [(True,)]
    wait_for(inactive, what="the walsender to go")


def _drop_slot(dep: Deployment, config: LoadedConfig) -> None:
    """Drop the slot under the running worker.

    The worker reconnects within milliseconds of losing its walsender: a client-side terminate-then-
    drop lost that race now and then, and so did ``pg_terminate_backend(pid, timeout)``, which waits in
    100 ms steps. One server-side loop signals the walsender and spins on the slot without waiting,
    dropping it in the moment between the old walsender's exit and the worker's next connection."""
    slot = sql.Literal(slot_name(config.model, "citizen"))
    q(dep, "citizen", sql.SQL("""
        DO $$
        DECLARE
          holder int;
          started timestamptz := clock_timestamp();
        BEGIN
          LOOP
            SELECT active_pid INTO holder FROM pg_replication_slots WHERE slot_name = {slot};
            IF holder IS NULL THEN
              BEGIN
                PERFORM pg_drop_replication_slot({slot});
                RETURN;
              EXCEPTION WHEN object_in_use THEN
                NULL;  -- the worker got back in between: go again
              END;
            ELSE
              PERFORM pg_terminate_backend(holder);  -- no waiting: see above
            END IF;
            IF clock_timestamp() - started > interval '20 seconds' THEN
              RAISE EXCEPTION 'the slot stayed in use';
            END IF;
          END LOOP;
        END $$""").format(slot=slot).as_string(None))


def _drop_publication(dep: Deployment, config: LoadedConfig) -> None:
    q(dep, "citizen", f"DROP PUBLICATION {publication_name(config.model, 'citizen')}")
    add_documents(dep, range(2, 3))  # decoding the next change needs the publication


def _revoke_replication(dep: Deployment, config: LoadedConfig) -> None:
    q(dep, "citizen", "ALTER ROLE civicsync_capture NOREPLICATION")
    _walsender_gone(dep, slot_name(config.model, "citizen"))


def _supervised(dep: Deployment) -> tuple[LoadedConfig, ServiceState, Supervisor]:
    """One application, and the service's supervisor running F7's worker."""
    make_applications(dep, 1)
    config = cdc_config(dep)
    state = ServiceState()
    supervisor = Supervisor(config, state, SupervisorSettings(restart_initial_delay=0.2), flows=["F7"])
    supervisor.start()
    return config, state, supervisor


@pytest.mark.parametrize(("fault", "says"), [
    (_drop_slot, "civicsync cdc resync citizen"),
    (_drop_publication, "civicsync db init"),
    (_revoke_replication, "REPLICATION attribute"),
], ids=["slot dropped", "publication dropped", "replication revoked"])
def test_a_permanent_stream_error_stops_the_worker_for_good(
        fresh_deployment: Deployment, fault: Callable[[Deployment, LoadedConfig], None], says: str) -> None:
    dep = fresh_deployment
    config, state, supervisor = _supervised(dep)
    try:
        add_documents(dep, range(1, 2))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(1,)],
                 what="the first document")
        fault(dep, config)
        wait_for(lambda: state.workers["citizen"].phase == "failed", timeout=20, what="the worker to fail")
        error = state.workers["citizen"].last_error or ""
        assert "reconnecting will not help" in error or "changes since then may be lost" in error
        assert says in error and state.workers["citizen"].restarts == 0
        assert metrics.REGISTRY.get_sample_value("civicsync_replication_broken", {"worker": "citizen"}) == 1
        assert metrics.REGISTRY.get_sample_value("civicsync_flow_up", {"flow": "document_metadata", "kind": "cdc"}) == 0
        time.sleep(1.0)
        assert state.workers["citizen"].phase == "failed"  # no reconnect loop, no restart
        assert not supervisor.alive()
    finally:
        supervisor.stop(10)
        q(dep, "citizen", "ALTER ROLE civicsync_capture REPLICATION")
        cleanup(config, "citizen")


def test_a_transient_stream_error_still_reconnects(fresh_deployment: Deployment) -> None:
    """A terminated walsender (SQLSTATE 57P01 or a dead socket) is retried as before."""
    dep = fresh_deployment
    config, state, supervisor = _supervised(dep)
    try:
        wait_for(lambda: state.workers["citizen"].phase == "running", what="the worker")
        _walsender_gone(dep, slot_name(config.model, "citizen"))
        add_documents(dep, range(1, 2))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(1,)],
                 what="the document after the reconnect")
        assert state.workers["citizen"].phase == "running"
    finally:
        supervisor.stop(10)
        cleanup(config, "citizen")


# --------------------------------------------------------------------------- item 19: a lost slot


def test_a_lost_slot_is_recovered_by_one_command_with_nothing_lost_or_doubled(fresh_deployment: Deployment,
                                                                             tmp_path: Path) -> None:
    """Documents (F7) and applications with their event log (F6) change while the worker is stopped,
    and the slot is dropped meanwhile. The worker refuses to start on the lost slot; `civicsync cdc
    resync citizen` makes a new slot, applies its snapshot, reconciles: the targets equal the sources,
    deleted rows are gone, each status has one event row; run twice, it changes nothing more; then
    streaming resumes."""
    dep = fresh_deployment
    make_applications(dep, 3)
    q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED', updated_at = clock_timestamp()")
    raw = cdc_raw()
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    config = cdc_config(dep, lambda r: r.update(raw))
    worker = CdcWorker(config, "citizen", ["F6", "F7"])
    worker.prepare()
    handle = RunningWorker(worker).start()
    try:
        add_documents(dep, range(1, 5))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(4,)]
                 and q(dep, "warehouse", "SELECT count(*) FROM application_events") == [(3,)], what="the start")
    finally:
        handle.stop()
    # While no worker reads the slot: changes of every kind, then the slot is lost.
    q(dep, "citizen", "UPDATE application_documents SET mime_type = 'x/y' WHERE document_id = 1")
    q(dep, "citizen", "DELETE FROM application_documents WHERE document_id = 2")
    add_documents(dep, range(5, 6))
    q(dep, "citizen", "UPDATE applications SET status = 'UNDER_REVIEW', updated_at = clock_timestamp()"
                      " WHERE application_id = 1")
    q(dep, "citizen", "SELECT pg_drop_replication_slot(%s)", slot_name(config.model, "citizen"))
    with pytest.raises(ReplicationBrokenError, match="civicsync cdc resync citizen"):
        CdcWorker(config, "citizen", ["F6", "F7"]).prepare()
    try:
        for round_ in range(2):
            result = civicsync(dep, config_path, "cdc", "resync", "citizen")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "document_metadata (F7): " + ("repaired" if round_ == 0 else "equal") in result.stdout
            docs = "SELECT document_id, mime_type FROM application_documents ORDER BY 1"
            assert q(dep, "warehouse", docs) == q(dep, "citizen", docs) == [(1, "x/y"), (3, None), (4, None),
                                                                          (5, None)]
            assert q(dep, "warehouse", "SELECT application_id, event_type FROM application_events ORDER BY 1, 2") \
                == [(1, "SUBMITTED"), (1, "UNDER_REVIEW"), (2, "SUBMITTED"), (3, "SUBMITTED")]
        with running(config, "citizen", ["F6", "F7"]):
            add_documents(dep, range(6, 7))
            wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(5,)],
                     what="streaming from the new slot")
    finally:
        cleanup(config, "citizen")
    assert civicsync(dep, config_path, "cdc", "resync", "nowhere").returncode == 2


def test_a_slot_invalidated_by_max_slot_wal_keep_size_is_recovered(fresh_deployment: Deployment,
                                                                   tmp_path: Path) -> None:
    """The source removes WAL a stopped worker's slot still needs (max_slot_wal_keep_size): the
    slot's wal_status is 'lost'. The worker refuses to start on it; `cdc resync` drops it and
    recovers."""
    dep = fresh_deployment
    make_applications(dep, 1)
    raw = cdc_raw()
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    config = cdc_config(dep, lambda r: r.update(raw))
    worker = CdcWorker(config, "citizen", ["F7"])
    worker.prepare()
    handle = RunningWorker(worker).start()
    try:
        add_documents(dep, range(1, 3))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(2,)],
                 what="the documents")
    finally:
        handle.stop()
    slot = slot_name(config.model, "citizen")
    try:
        q(dep, "citizen", "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        q(dep, "citizen", "SELECT pg_reload_conf()")
        q(dep, "citizen", "DELETE FROM application_documents WHERE document_id = 2")
        for _ in range(4):  # more WAL than the slot may keep
            q(dep, "citizen", "INSERT INTO user_events (event_id, session_id, event_type, occurred_at)"
                              " SELECT g, 's', 'view', now() FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING")
            q(dep, "citizen", "SELECT pg_switch_wal()")
        q(dep, "citizen", "CHECKPOINT")
        assert q(dep, "citizen", "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", slot) \
            == [("lost",)]
    finally:
        q(dep, "citizen", "ALTER SYSTEM RESET max_slot_wal_keep_size")
        q(dep, "citizen", "SELECT pg_reload_conf()")
    try:
        with pytest.raises(ReplicationBrokenError, match="invalidated"):
            CdcWorker(config, "citizen", ["F7"]).prepare()
        result = civicsync(dep, config_path, "cdc", "resync", "citizen")
        assert result.returncode == 0, result.stdout + result.stderr
        assert q(dep, "warehouse", "SELECT document_id FROM application_documents") == [(1,)]
        assert q(dep, "citizen", "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", slot) \
            == [("reserved",)]
    finally:
        cleanup(config, "citizen")
