"""Dead letters and logs: no value from an error text, any key length, retries that destroy nothing,
replay that reports failure (issue 9 items 11-13, 16, 17)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from civicsync.api.keys import create_key
from civicsync.db.errors import classify, describe
from civicsync.localpg import LocalPostgres
from civicsync.runtime.cdc import CdcWorker
from fix_api import serve
from fix_cdc import (
    CIT,
    RunningWorker,
    add_documents,
    cdc_config,
    civicsync,
    make_applications,
    running,
    small_documents,
    wait_for,
)
from fix_db import Deployment, q

MARK = "Zq7"  # every planted value carries it: it must never show up in a stored or logged error


@pytest.fixture(scope="module")
def scratch(pg_server: LocalPostgres) -> Iterator[psycopg.Connection[Any]]:
    """A session with tables whose constraints and types the planted values break."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS errs; DROP TYPE IF EXISTS errs_mood")
        conn.execute("CREATE TYPE errs_mood AS ENUM ('calm')")
        conn.execute("CREATE TABLE errs (id int PRIMARY KEY, u text UNIQUE, c text CHECK (c = 'ok'), d date,"
                     " n int, m errs_mood, v varchar(3), j jsonb, nn text NOT NULL DEFAULT 'x')")
        conn.execute("INSERT INTO errs (id, u) VALUES (0, %s)", (f"{MARK}taken",))
        yield conn
        conn.execute("DROP TABLE errs; DROP TYPE errs_mood")


STATEMENTS = {
    "date": "INSERT INTO errs (id, d) VALUES (1, %s::text::date)",
    "int": "INSERT INTO errs (id, n) VALUES (1, %s::text::int)",
    "enum": "INSERT INTO errs (id, m) VALUES (1, %s::text::errs_mood)",
    "check": "INSERT INTO errs (id, c) VALUES (1, %s)",
    "json": "INSERT INTO errs (id, j) VALUES (1, %s::text::jsonb)",
    "varchar": "INSERT INTO errs (id, v) VALUES (1, %s)",
    "notnull": "INSERT INTO errs (id, nn, c) VALUES (1, NULL, 'ok' || %s)",
    "bytes": "INSERT INTO errs (id, c) VALUES (1, convert_from(convert_to(%s, 'UTF8') || '\\xc328'::bytea, 'UTF8'))",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(STATEMENTS)),
       tail=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
def test_a_real_server_error_is_described_without_its_value(scratch: psycopg.Connection[Any], kind: str,
                                                           tail: str) -> None:
    value = f'{MARK}{tail}"({MARK})=({MARK})'
    with pytest.raises(psycopg.Error) as caught:
        scratch.execute(STATEMENTS[kind], (value,))
    assert MARK in str(caught.value) or kind in ("notnull", "varchar", "bytes")  # the server did quote it
    text = describe(caught.value)
    assert MARK not in text and MARK not in str(classify(caught.value, "writing"))
    assert f"SQLSTATE {caught.value.sqlstate}" in text
    if kind == "check":
        assert "constraint errs_c_check" in text and "table errs" in text


def test_a_unique_violation_names_the_constraint_not_the_key(scratch: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        scratch.execute("INSERT INTO errs (id, u) VALUES (2, %s)", (f"{MARK}taken",))
    assert f"({MARK}taken)" in str(caught.value)  # the detail quotes the key
    text = describe(caught.value)
    assert MARK not in text and "constraint errs_u_key" in text and "SQLSTATE 23505" in text


def test_names_in_a_schema_error_are_kept(scratch: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error) as caught:
        scratch.execute("SELECT no_such_column FROM errs")
    assert 'column "no_such_column" does not exist' in describe(caught.value)


def test_dead_letters_and_the_log_hold_no_value_of_a_type_or_constraint_error(
        fresh_deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    """Item 12: a streamed value the target's type refuses, and a row its CHECK refuses (whose detail
    quotes the whole failing row): stored error and log keep SQLSTATE, constraint and column only."""
    dep = fresh_deployment
    make_applications(dep, 1)
    q(dep, "warehouse", "ALTER TABLE application_documents ALTER COLUMN mime_type TYPE date USING NULL")
    q(dep, "warehouse", "ALTER TABLE application_documents ADD CONSTRAINT small CHECK (size_bytes < 1000)")
    config = cdc_config(dep)
    caplog.set_level(logging.DEBUG)
    with running(config, "citizen", ["F7"]):
        add_documents(dep, range(1, 2))
        q(dep, "citizen", "UPDATE application_documents SET mime_type = %s WHERE document_id = 1", f"{MARK}/pdf")
        add_documents(dep, range(2, 3), size=7_654_321)
        q(dep, "citizen", "UPDATE application_documents SET sha256 = %s WHERE document_id = 2", f"{MARK}sha")
        rows = wait_for(lambda: (r := q(dep, "warehouse", "SELECT row_key->>'document_id', error_kind, error"
                                                        " FROM civicsync.dead_letters ORDER BY 1")) and len(r) == 2
                        and r, what="two dead letters")
    (_, kind1, error1), (_, kind2, error2) = rows
    assert kind1 == "sqlstate_22007" and "type date" in error1 and MARK not in error1
    assert kind2 == "sqlstate_23514" and "constraint small" in error2
    for text in (error1, error2, caplog.text):
        assert MARK not in text and "7654321" not in text and "f.pdf" not in text


# --------------------------------------------------------------------------- item 13: long keys


def notes_flow(dep: Deployment, raw: dict[str, Any], *, cdc: dict[str, Any] | None = None) -> None:
    """A CDC flow citizen public.notes → warehouse public.notes with a text primary key."""
    raw["connections"]["citizen"]["tables"]["public.notes"] = {"key": ["code"], "columns": ["code", "body"]}
    raw["connections"]["warehouse"]["tables"]["public.notes"] = {"key": ["code"]}  # written only: columns derived
    raw["flows"]["notes"] = {"id": "F90", "kind": "cdc", "source": {"connection": "citizen", "table": "public.notes"},
                             "target": {"connection": "warehouse", "table": "public.notes"},
                             "columns": {"code": "code", "body": "body"}, **({"cdc": cdc} if cdc else {})}


def make_notes(dep: Deployment) -> None:
    # A btree entry holds ~2.7 kB: the source keeps long keys unique through a hash; the target's
    # plain primary key refuses them (program_limit_exceeded), so a long key is dead-lettered.
    q(dep, "citizen", "CREATE TABLE public.notes (code text NOT NULL, body text)")
    q(dep, "citizen", "CREATE UNIQUE INDEX notes_code ON public.notes (md5(code))")
    q(dep, "citizen", "ALTER TABLE public.notes REPLICA IDENTITY FULL")
    q(dep, "warehouse", "CREATE TABLE public.notes (code text PRIMARY KEY, body text)")


def test_a_long_key_is_dead_lettered_and_the_worker_goes_on(fresh_deployment: Deployment) -> None:
    """Item 13: a 3.2 kB key that fails goes to the dead letters and is retried there; the worker
    keeps streaming."""
    dep = fresh_deployment
    make_notes(dep)
    config = cdc_config(dep, lambda raw: notes_flow(dep, raw))
    long_key = secrets.token_hex(1600)  # incompressible: TOAST compression would shrink a repeated one
    with running(config, "citizen", ["notes"]) as handle:
        q(dep, "citizen", "INSERT INTO notes VALUES (%s, 'a')", long_key)
        wait_for(lambda: q(dep, "warehouse", "SELECT length(row_key->>'code') FROM civicsync.dead_letters")
                 == [(3200,)], what="the long key's dead letter")
        q(dep, "citizen", "INSERT INTO notes VALUES ('short', 'ok')")
        wait_for(lambda: q(dep, "warehouse", "SELECT code FROM notes") == [("short",)], what="later rows")
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*), max(attempts) > 1, min(status)"
                                             " FROM civicsync.dead_letters") == [(1, True, "pending")],
                 what="a retry of the same entry")
        assert handle.error is None and handle.thread.is_alive()


# --------------------------------------------------------------------------- item 16: timeouts are transient


def documents_applied(dep: Deployment, n: int) -> None:
    """Add documents 1..n at the source and wait until the worker has applied them."""
    add_documents(dep, range(1, n + 1))
    wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(n,)],
             what="the documents")


@pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
def test_a_lock_or_statement_timeout_is_retried_never_dead_lettered(
        fresh_deployment: Deployment, setting: str, caplog: pytest.LogCaptureFixture) -> None:
    """A real lock held on a target row makes the apply session time out (55P03 or 57014) while
    another key of the same source transaction breaks a constraint: the broken key is dead-lettered,
    the locked one is retried until the lock goes and then lands; the worker never stops."""
    dep = fresh_deployment
    make_applications(dep, 1)
    q(dep, "warehouse", "ALTER TABLE application_documents ADD CONSTRAINT small CHECK (size_bytes < 1000)")
    q(dep, "warehouse", f"ALTER DATABASE {dep.warehouse_db} SET {setting} = '150ms'")
    config = cdc_config(dep)
    caplog.set_level(logging.INFO)
    with running(config, "citizen", ["F7"]) as handle:
        documents_applied(dep, 2)
        with dep.connect("warehouse") as holder:
            holder.execute("BEGIN")
            holder.execute("SELECT 1 FROM application_documents WHERE document_id = 2 FOR UPDATE")
            with dep.connect("citizen") as conn, conn.transaction():
                conn.execute("UPDATE application_documents SET size_bytes = 5000 WHERE document_id = 1")
                conn.execute("UPDATE application_documents SET mime_type = 'x/y' WHERE document_id = 2")
            code = "55P03" if setting == "lock_timeout" else "57014"
            wait_for(lambda: caplog.text.count(f"SQLSTATE {code})); retrying") >= 3, what="timeouts retried")
            assert handle.thread.is_alive() and handle.error is None
            assert q(dep, "warehouse", "SELECT count(*) FROM civicsync.dead_letters"
                                       " WHERE row_key->>'document_id' = '2'") == [(0,)]
            holder.execute("COMMIT")
        wait_for(lambda: q(dep, "warehouse", "SELECT mime_type FROM application_documents WHERE document_id = 2")
                 == [("x/y",)], what="the locked key to land once the lock is gone")
        wait_for(lambda: q(dep, "warehouse", "SELECT row_key->>'document_id' FROM civicsync.dead_letters")
                 == [("1",)], what="only the broken key in the dead letters")


def test_a_stop_during_a_target_outage_ends_without_waiting_out_the_backoff(fresh_deployment: Deployment,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Item 17: the worker retrying a target it cannot write (a lock held for good, lock_timeout
    set) is in a long backoff sleep when asked to stop: it stops at once, committing nothing half-way,
    and the change arrives after the next start."""
    dep = fresh_deployment
    make_applications(dep, 1)
    q(dep, "warehouse", f"ALTER DATABASE {dep.warehouse_db} SET lock_timeout = '100ms'")
    config = cdc_config(dep)
    caplog.set_level(logging.INFO)
    worker = CdcWorker(config, "citizen", ["F7"])
    worker.prepare()
    handle = RunningWorker(worker).start()
    try:
        documents_applied(dep, 1)
        with dep.connect("warehouse") as holder:
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE application_documents IN ACCESS EXCLUSIVE MODE")
            q(dep, "citizen", "UPDATE application_documents SET mime_type = 'x/y'")
            wait_for(lambda: "retrying in 6.4s" in caplog.text, timeout=30, what="a long backoff")
            started = time.monotonic()
            handle.worker.stop_event.set()
            handle.thread.join(10)
            took = time.monotonic() - started
            holder.execute("ROLLBACK")
        assert not handle.thread.is_alive() and handle.error is None
        assert took < 2.0, f"the stop took {took:.1f}s"  # not the 6.4 s backoff
        with running(config, "citizen", ["F7"]):
            wait_for(lambda: q(dep, "warehouse", "SELECT mime_type FROM application_documents") == [("x/y",)],
                     what="the change after the next start")
    finally:
        handle.worker.stop_event.set()
        handle.thread.join(10)


# --------------------------------------------------------------------------- item 17: replay reports failure


def test_a_failing_replay_is_a_failure_in_the_cli_and_the_api(fresh_deployment: Deployment, tmp_path: Path) -> None:
    """`dlq replay` exits 1 and the API answers 409 while a key still fails; an unknown flow is exit 2
    (`dlq replay`, `dlq list`, `runs`), not a traceback; after the fix the replay exits 0."""
    dep = fresh_deployment
    config, config_path = small_documents(dep, tmp_path)
    with running(config, "citizen", ["F7"]):
        add_documents(dep, range(1, 2), size=5000)
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM civicsync.dead_letters") == [(1,)],
                 what="the dead letter")
    for args in (("--flow", "F7"), ("--all",)):
        failed = civicsync(dep, config_path, "dlq", "replay", *args)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "(1 failed again)" in failed.stdout and "still cannot be applied" in failed.stderr
    for args in (("dlq", "replay", "--flow", "NOPE"), ("dlq", "list", "--flow", "NOPE"), ("runs", "--flow", "NOPE")):
        unknown = civicsync(dep, config_path, *args)
        assert unknown.returncode == 2 and "no flow called 'NOPE'" in unknown.stderr, args
        assert "Traceback" not in unknown.stderr
    server = serve(config)
    try:
        key = create_key(config, "replayer", ["admin:write", "admin:read"])[0]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            answer = client.post("/api/v1/dead-letters/replay", json={"flow": "F7"})
            assert answer.status_code == 409 and "still cannot be applied" in answer.text
            q(dep, "warehouse", "ALTER TABLE application_documents DROP CONSTRAINT small")
            answer = client.post("/api/v1/dead-letters/replay", json={"flow": "F7"})
            assert answer.status_code == 200 and answer.json() == {"replayed": 1, "still_pending": 0}
    finally:
        server.stop()
    assert q(dep, "warehouse", "SELECT size_bytes FROM application_documents") == [(5000,)]


# --------------------------------------------------------------------------- item 11: retries destroy nothing


def test_a_retry_under_replica_identity_full_never_deletes_a_row_whose_source_exists(
        fresh_deployment: Deployment) -> None:
    """Item 11 (retry half): with REPLICA IDENTITY FULL the event's identity is the whole row. A dead
    letter keeps only the declared key; its retries look the row up by that key, so a row whose
    values changed since is found, not taken for deleted. A whole-row key stored by an older version
    is cut down to the key at start. No target row is deleted at any point."""
    dep = fresh_deployment
    make_applications(dep, 1)
    q(dep, "citizen", "ALTER TABLE application_documents REPLICA IDENTITY FULL")
    q(dep, "warehouse", "ALTER TABLE application_documents ADD CONSTRAINT small CHECK (size_bytes < 1000)")
    config = cdc_config(dep)
    worker = CdcWorker(config, "citizen", ["F7"])
    worker.prepare()
    handle = RunningWorker(worker).start()
    try:
        documents_applied(dep, 2)
    finally:
        worker.stop_event.set()
        handle.thread.join(30)
    # What an older version stored for document 2: its whole row, with values it no longer has.
    q(dep, "warehouse", "INSERT INTO civicsync.dead_letters (flow, row_key, error_kind, error, op, lsn)"
                        " VALUES ('document_metadata', %s, 'sqlstate_23514', 'old', 'u', 1)",
      Jsonb({"document_id": "2", "application_id": "1", "doc_type": "ID", "file_name": f"{MARK}.pdf",
             "size_bytes": "9999", "storage_uri": "s3://x"}))
    with running(config, "citizen", ["F7"]):
        q(dep, "citizen", "UPDATE application_documents SET size_bytes = 5000 WHERE document_id = 1")
        q(dep, "citizen", "UPDATE application_documents SET mime_type = 'x/y' WHERE document_id = 1")
        wait_for(lambda: q(dep, "warehouse", "SELECT row_key FROM civicsync.dead_letters ORDER BY 1")
                 == [({"document_id": "1"},), ({"document_id": "2"},)], what="dead letters keyed by the key only")
        deadline = time.monotonic() + 4  # retries at 1 s, 2 s, ... meanwhile
        while time.monotonic() < deadline:
            assert q(dep, "warehouse", "SELECT document_id FROM application_documents ORDER BY 1") == [(1,), (2,)]
            time.sleep(0.1)
        assert q(dep, "warehouse", "SELECT status FROM civicsync.dead_letters WHERE row_key->>'document_id' = '1'") \
            == [("pending",)]
        q(dep, "warehouse", "ALTER TABLE application_documents DROP CONSTRAINT small")
        wait_for(lambda: q(dep, "warehouse", "SELECT document_id, size_bytes, mime_type FROM application_documents"
                                             " ORDER BY 1") == [(1, 5000, "x/y"), (2, 10, None)],
                 timeout=20, what="the retry to converge on the source's current rows")
    assert MARK not in str(q(dep, "warehouse", "SELECT row_key FROM civicsync.dead_letters"))
    # A replay from the CLI or the API (no worker start in between) looks up by the key columns too.
    q(dep, "warehouse", "INSERT INTO civicsync.dead_letters (flow, row_key, error_kind, error, op, lsn)"
                        " VALUES ('document_metadata', %s, 'sqlstate_23514', 'old', 'u', 1)",
      Jsonb({"document_id": "2", "size_bytes": "9999"}))
    assert CdcWorker(config, "citizen", ["F7"]).replay_now().replayed == 1
    assert q(dep, "warehouse", "SELECT document_id FROM application_documents ORDER BY 1") == [(1,), (2,)]


# --------------------------------------------------------------------------- item 7: replay keeps transitions


def test_a_replay_of_an_event_log_key_restores_every_transition(fresh_deployment: Deployment) -> None:
    """Item 7: application 7 fails at the registry (a constraint) through three transitions, one in
    the failing batch and two waiting behind it. Its dead letter keeps them as the flow's masked
    output (key and event columns only: no raw citizen id, no form); the replay after the fix logs all
    of them, once, and the current row."""
    dep = fresh_deployment
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    q(dep, "warehouse", "ALTER TABLE applications ADD CONSTRAINT not_seven CHECK (application_id <> 7)")
    config = cdc_config(dep)
    steps = ["UNDER_REVIEW", "DOCUMENTS_REQUIRED", "APPROVED"]
    with running(config, "citizen", ["F6"]):
        with dep.connect("citizen") as conn, conn.transaction():  # two transitions in the failing batch
            conn.execute("INSERT INTO applications (application_id, citizen_id, scheme_id, status, form_data,"
                         " updated_at) VALUES (7, %s, 1, 'SUBMITTED', %s, clock_timestamp())",
                         (CIT, Jsonb({"national_id": f"{MARK}1234"})))
            conn.execute("UPDATE applications SET status = 'UNDER_REVIEW', updated_at = clock_timestamp()")
        wait_for(lambda: q(dep, "warehouse", "SELECT error_kind FROM civicsync.dead_letters")
                 == [("sqlstate_23514",)], what="the dead letter")
        for status in steps[1:]:  # later transitions wait behind it
            q(dep, "citizen", "UPDATE applications SET status = %s, updated_at = clock_timestamp()", status)
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (8, %s, 1, 'SUBMITTED')", CIT)
        wait_for(lambda: q(dep, "warehouse", "SELECT application_id FROM applications") == [(8,)],
                 what="other keys to flow on")
        wait_for(lambda: q(dep, "warehouse", "SELECT jsonb_array_length(held) FROM civicsync.dead_letters")
                 == [(4,)], what="all four transitions held")
        held = str(q(dep, "warehouse", "SELECT held FROM civicsync.dead_letters"))
        assert MARK not in held and CIT not in held and "form_data" not in held
        q(dep, "warehouse", "ALTER TABLE applications DROP CONSTRAINT not_seven")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM civicsync.dead_letters") == [("replayed",)],
                 timeout=20, what="the automatic retry")
    assert q(dep, "warehouse", "SELECT status FROM applications WHERE application_id = 7") == [("APPROVED",)]
    assert q(dep, "warehouse", "SELECT event_type, source_lsn <> '0/0' FROM application_events"
                               " WHERE application_id = 7 ORDER BY occurred_at") == [
        ("SUBMITTED", True), ("UNDER_REVIEW", True), ("DOCUMENTS_REQUIRED", True), ("APPROVED", True)]
    assert q(dep, "warehouse", "SELECT held FROM civicsync.dead_letters") == [(None,)]
