"""Issue 9 items 1, 6 and 11: key changes move rows, deletes keep the batch's transitions, keys are keys.

- 9.1 an UPDATE that changes the primary key moves the target row, also when a TOASTed column was
  left unchanged (its value comes from the old target row), under the default replica identity
  ('K' old key) and REPLICA IDENTITY FULL ('O' old row), across batches and within one.
- 9.6 a delete in the same batch as earlier status changes of its key keeps those transitions in
  the event log: one event row per source transition, however the batches fall.
- 9.11 with REPLICA IDENTITY FULL the dead letter's key is the declared primary key, not the row.
"""

from __future__ import annotations

from typing import Any

import pytest

from civicsync.config import LoadedConfig
from fidelity import create_pair, dead_letters, pair_config, texts
from fix_cdc import CIT, cdc_config, paused, portal_basics, running, started, wait_for
from fix_db import Deployment, q

MOVE_COLUMNS = {"id": "int PRIMARY KEY", "small": "text", "j": "json", "big": "text", "bigj": "jsonb"}
BIG = "x" * 200_000


def _move_table(dep: Deployment, identity_full: bool) -> LoadedConfig:
    create_pair(dep, "mv", MOVE_COLUMNS, types=False, identity_full=identity_full)
    for db, table in (("citizen", "mv"), ("warehouse", "mv_copy")):
        for col in ("big", "bigj"):
            q(dep, db, f"ALTER TABLE {table} ALTER COLUMN {col} SET STORAGE EXTERNAL")
    return pair_config(dep, "mv", list(MOVE_COLUMNS), ["id"])


def _same(dep: Deployment) -> bool:
    cols = list(MOVE_COLUMNS)
    return texts(dep, "citizen", "mv", cols) == texts(dep, "warehouse", "mv_copy", cols)


@pytest.mark.parametrize("identity_full", [False, True], ids=["default_identity", "identity_full"])
def test_a_key_change_moves_the_row_with_its_unchanged_toast_values(fresh_deployment: Deployment,
                                                                    identity_full: bool) -> None:
    dep = fresh_deployment
    config = _move_table(dep, identity_full)
    q(dep, "citizen", "INSERT INTO mv VALUES (1, 'a', '{\"k\": 1}', %s, %s), (2, 'b', '[1]', %s, '{}')",
      BIG, f'{{"b": "{BIG}"}}', BIG + "2")
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        q(dep, "citizen", "UPDATE mv SET id = 20 WHERE id = 2")                    # only the key; TOAST unsent
        q(dep, "citizen", "UPDATE mv SET id = 10, small = 'moved', j = '{\"k\": 2}' WHERE id = 1")
        wait_for(lambda: _same(dep), what="the moves")
        with dep.connect("citizen") as conn, conn.transaction():                  # one transaction, one batch:
            conn.execute("INSERT INTO mv VALUES (5, 'c', 'null', %s, '[]')", (BIG + "5",))
            conn.execute("UPDATE mv SET id = 50 WHERE id = 5")                    # filled from the batch itself
            conn.execute("UPDATE mv SET id = 11 WHERE id = 10")
            conn.execute("UPDATE mv SET id = 12, small = 'twice' WHERE id = 11")  # moved twice
        wait_for(lambda: _same(dep), what="the moves within one batch")
        q(dep, "citizen", "DELETE FROM mv WHERE id = 20")
        wait_for(lambda: _same(dep), what="the delete of a moved row")
    assert texts(dep, "warehouse", "mv_copy", ["id"]) == [("12",), ("50",)]
    assert q(dep, "warehouse", "SELECT length(big), length(bigj::text) FROM mv_copy WHERE id = 12") \
        == [(200_000, 200_009)]
    assert dead_letters(dep) == []


def test_a_key_change_waits_for_a_reread_when_the_old_row_is_not_in_the_target(
        fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = _move_table(dep, False)
    q(dep, "citizen", "INSERT INTO mv VALUES (1, 'a', '{}', %s, '{}')", BIG)
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        q(dep, "warehouse", "DELETE FROM mv_copy")  # someone removed the target row meanwhile
        q(dep, "citizen", "UPDATE mv SET id = 2 WHERE id = 1")  # TOAST not resent: only the source has it
        # The dead letter's replay re-reads the source row by its key and writes it whole.
        wait_for(lambda: _same(dep), timeout=20, what="the re-read row")
    assert q(dep, "warehouse", "SELECT length(big) FROM mv_copy WHERE id = 2") == [(200_000,)]


def events(dep: Deployment, application_id: int) -> list[str]:
    return [r[0] for r in q(dep, "warehouse", "SELECT event_type FROM application_events WHERE application_id = %s"
                                              " ORDER BY occurred_at, event_id", application_id)]


def _lifecycle(dep: Deployment, app: int, *, then_insert: bool = False) -> None:
    """Insert SUBMITTED, update to UNDER_REVIEW, delete (three transactions) [, insert SUBMITTED again]."""
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, updated_at)"
                      " VALUES (%s, %s, 1, 'SUBMITTED', clock_timestamp())", app, CIT)
    q(dep, "citizen", "UPDATE applications SET status = 'UNDER_REVIEW', updated_at = clock_timestamp()"
                      " WHERE application_id = %s", app)
    q(dep, "citizen", "DELETE FROM applications WHERE application_id = %s", app)
    if then_insert:
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, updated_at)"
                          " VALUES (%s, %s, 1, 'SUBMITTED', clock_timestamp())", app, CIT)


def test_a_delete_in_the_same_batch_keeps_the_keys_transitions(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)

    def one_batch(raw: dict[str, Any]) -> None:
        # The read-ahead thread may not have read all seven transactions when the first batch is cut;
        # waiting up to 5 s after the first one makes the seven one batch even on a loaded machine.
        raw["connections"]["citizen"]["capture"]["batch_max_wait_ms"] = 5000

    config = cdc_config(dep, one_batch)
    with paused(config, "citizen", ["F6"]) as (worker, sizes):
        _lifecycle(dep, 7000001)
        _lifecycle(dep, 7000002, then_insert=True)
        with started(worker):
            wait_for(lambda: events(dep, 7000002) == ["SUBMITTED", "UNDER_REVIEW", "SUBMITTED"], what="events")
            assert sizes[0] == 7  # all seven transactions in one batch
        assert events(dep, 7000001) == ["SUBMITTED", "UNDER_REVIEW"]
        assert q(dep, "warehouse", "SELECT application_id FROM applications") == [(7000002,)]


def test_transitions_across_batches_are_logged_once(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    with running(cdc_config(dep), "citizen", ["F6"]):
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, updated_at)"
                          " VALUES (7000003, %s, 1, 'SUBMITTED', clock_timestamp())", CIT)
        wait_for(lambda: events(dep, 7000003) == ["SUBMITTED"], what="the first event")
        q(dep, "citizen", "UPDATE applications SET status = 'UNDER_REVIEW', updated_at = clock_timestamp()"
                          " WHERE application_id = 7000003")
        wait_for(lambda: events(dep, 7000003) == ["SUBMITTED", "UNDER_REVIEW"], what="the second event")
        q(dep, "citizen", "DELETE FROM applications WHERE application_id = 7000003")
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM applications") == [(0,)], what="the delete")
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, updated_at)"
                          " VALUES (7000003, %s, 1, 'SUBMITTED', clock_timestamp())", CIT)
        wait_for(lambda: len(events(dep, 7000003)) == 3, what="the event of the new row")
    assert events(dep, 7000003) == ["SUBMITTED", "UNDER_REVIEW", "SUBMITTED"]


def test_identity_full_dead_letters_hold_only_the_primary_key(fresh_deployment: Deployment,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    q(dep, "citizen", "ALTER TABLE applications REPLICA IDENTITY FULL")
    q(dep, "warehouse", "ALTER TABLE applications ADD CONSTRAINT no_666 CHECK (scheme_id <> 666)")
    with running(cdc_config(dep), "citizen", ["F6"]):
        q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES"
                          " (666, 'S666', 'x', 'C', 'OPEN')")
        q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED', scheme_id = 666, updated_at = now()")
        wait_for(lambda: dead_letters(dep), what="the dead letter")
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, form_data)"
                          " VALUES (101, %s, 2, 'SUBMITTED', '{}')", CIT)
        q(dep, "citizen", "UPDATE applications SET status = 'UNDER_REVIEW' WHERE application_id = 101")
        wait_for(lambda: events(dep, 101) == ["SUBMITTED", "UNDER_REVIEW"], what="the other application")
        q(dep, "citizen", "DELETE FROM applications WHERE application_id = 101")
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM applications WHERE application_id = 101")
                 == [(0,)], what="the delete under REPLICA IDENTITY FULL")
    keys: list[Any] = [r[0] for r in q(dep, "warehouse", "SELECT row_key FROM civicsync.dead_letters")]
    assert keys == [{"application_id": "100"}]
    # Nor does the service log get the row: not the raw citizen id, not the form's national id.
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "dead-lettered" in logged and CIT not in logged and "234567890123" not in logged
