"""Dead letters of Kafka-carried flows are retried by the group's workers themselves, between batches,
as the native worker retries its own: no `civicsync dlq replay` is needed once the cause is fixed.
One worker of a group retries at a time (an advisory lock on the target).

All real: the session's Kafka broker, PostgreSQL with logical replication, `civicsync capture` and
`apply --group` workers on threads, the reference config's F7 (document metadata, a masked
vocabulary for doc_type).
"""

from __future__ import annotations

import time
from typing import Any

from civicsync.config import LoadedConfig
from civicsync.kafka.consume import GroupApplier
from civicsync.kafka.local import KafkaCluster
from fix_cdc import CIT, wait_for
from fix_db import Deployment, q
from fix_kafka import applying, capturing, kafka_config, kafka_raw

MARK = "Zq7"  # in the failing row: it must never show up in a stored error
VOCABULARY = ("('INCOME_CERT', 'CASTE_CERT', 'BANK_PASSBOOK', 'PHOTO', 'RATION_CARD', 'ADDRESS_PROOF',"
              " 'DISABILITY_CERT')")
# What F7's rules derive from the source, written independently of civicsync: columns as mapped,
# doc_type through the vocabulary mask (anything else becomes OTHER).
DERIVED = ("SELECT document_id, application_id, CASE WHEN doc_type IN " + VOCABULARY + " THEN doc_type ELSE 'OTHER'"
           " END, mime_type, size_bytes, sha256, uploaded_at FROM application_documents ORDER BY 1")
APPLIED = ("SELECT document_id, application_id, doc_type, mime_type, size_bytes, sha256, uploaded_at"
           " FROM application_documents ORDER BY 1")


def dlq_config(dep: Deployment, broker: KafkaCluster) -> LoadedConfig:
    """F6 and F7 on Kafka; short dead-letter backoff (the test waits seconds, not minutes); the
    warehouse refuses documents of 1000 bytes or more (a constraint the portal does not have)."""
    raw = kafka_raw()
    raw["retries"] = {"dead_letters": {"attempts": 12, "initial_delay": 0.2, "max_delay": 1.0}}
    config = kafka_config(dep, broker, raw)
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                      " VALUES (1, %s, 1, 'DRAFT')", CIT)
    q(dep, "warehouse", "ALTER TABLE application_documents ADD CONSTRAINT small CHECK (size_bytes < 1000)")
    return config


def add_document(dep: Deployment, doc: int, doc_type: str = "INCOME_CERT") -> None:
    q(dep, "citizen", "INSERT INTO application_documents (document_id, application_id, doc_type, file_name, size_bytes,"
                      " storage_uri, uploaded_at) VALUES (%s, 1, %s, 'f.pdf', 10, 's3://x', now())", doc, doc_type)
    wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents WHERE document_id = %s", doc)
             == [(1,)], timeout=60, what=f"document {doc} on the warehouse")


def break_document(dep: Deployment, doc: int) -> None:
    """A source change the warehouse refuses: the key is dead-lettered."""
    q(dep, "citizen", "UPDATE application_documents SET size_bytes = 5000, sha256 = %s WHERE document_id = %s",
      f"{MARK}sha", doc)
    wait_for(lambda: q(dep, "warehouse", "SELECT row_key, status, error_kind FROM civicsync.dead_letters")
             == [({"document_id": str(doc)}, "pending", "sqlstate_23514")], timeout=60, what="the dead letter")


def letters(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT row_key->>'document_id', status FROM civicsync.dead_letters ORDER BY 1")


def converged(dep: Deployment) -> bool:
    return q(dep, "warehouse", APPLIED) == q(dep, "citizen", DERIVED)


def test_the_worker_alone_replays_a_fixed_key_and_converges_it(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str) -> None:
    """A change the target refuses is dead-lettered; a later change of the key waits behind it while
    other keys flow on; once the source row is fixed, the running worker's own retry (no `dlq replay`)
    converges the key from the source's current row within seconds, and the entry ends `replayed`."""
    dep = fresh_deployment
    config = dlq_config(dep, kafka_broker)
    with capturing(config), applying(config, "gdlq") as worker:
        add_document(dep, 1, doc_type="ID")  # not in the vocabulary: OTHER on the warehouse
        break_document(dep, 1)
        before = worker.stats.records
        q(dep, "citizen", "UPDATE application_documents SET mime_type = 'x/y' WHERE document_id = 1")
        wait_for(lambda: worker.stats.records > before, timeout=60, what="the later change to be consumed")
        add_document(dep, 2)  # another key flows on meanwhile
        assert q(dep, "warehouse", "SELECT doc_type, size_bytes, mime_type, sha256 FROM application_documents"
                                   " WHERE document_id = 1") == [("OTHER", 10, None, None)], "the later change waits"
        assert letters(dep) == [("1", "pending")]
        # The automatic retries so far failed (the source row still breaks the rule) and said why, without values.
        stored = q(dep, "warehouse", "SELECT error FROM civicsync.dead_letters")[0][0]
        assert "constraint small" in stored and MARK not in stored

        q(dep, "citizen", "UPDATE application_documents SET size_bytes = 20 WHERE document_id = 1")  # the fix
        wait_for(lambda: letters(dep) == [("1", "replayed")] and converged(dep), timeout=15,
                 what="the worker's own retry to converge the key")
        assert worker.dead_letter_retries.replayed >= 1
    assert q(dep, "warehouse", APPLIED) == q(dep, "citizen", DERIVED)
    assert q(dep, "warehouse", "SELECT doc_type, size_bytes, mime_type, sha256 FROM application_documents"
                               " WHERE document_id = 1") == [("OTHER", 20, "x/y", f"{MARK}sha")]
    assert q(dep, "warehouse", "SELECT held FROM civicsync.dead_letters") == [(None,)]


def waiting_on_row_locks(dep: Deployment, group: str) -> list[int]:
    """Backend pids of the group's apply sessions that wait for a lock (the held target row)."""
    return [r[0] for r in q(dep, "warehouse", "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                              " AND application_name = %s", f"civicsync:kafka-apply:{group}")]


def advisory_holders(dep: Deployment, group: str) -> list[int]:
    """Backend pids of the group's apply sessions that hold an advisory lock."""
    return [r[0] for r in q(dep, "warehouse", "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                                              " WHERE l.locktype = 'advisory' AND l.granted"
                                              " AND a.application_name = %s", f"civicsync:kafka-apply:{group}")]


def test_two_workers_of_one_group_take_turns_retrying(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str) -> None:
    """Two workers of one group, one due dead letter. The target row it converges is held locked by
    another session, so the worker whose round takes the group's advisory lock stays inside that round
    (waiting on the row) while the other keeps running rounds: each of those finds the lock taken and
    skips, never replaying the same letter. Released, the one replay converges the key."""
    dep = fresh_deployment
    config = dlq_config(dep, kafka_broker)
    group = "gpair"
    with capturing(config), applying(config, group) as first, applying(config, group) as second:
        workers: list[GroupApplier] = [first, second]
        add_document(dep, 1)
        break_document(dep, 1)
        with dep.connect("warehouse") as holder:
            holder.execute("BEGIN")
            holder.execute("SELECT 1 FROM application_documents WHERE document_id = 1 FOR UPDATE")
            q(dep, "citizen", "UPDATE application_documents SET size_bytes = 20 WHERE document_id = 1")  # the fix
            waiting = wait_for(lambda: waiting_on_row_locks(dep, group), timeout=30,
                               what="a retry round to wait on the held row")
            assert len(waiting) == 1, "two workers replay the same letter"
            stuck_pid = waiting[0]
            (stuck,) = [w for w in workers if w.conn is not None and w.conn.info.backend_pid == stuck_pid]
            (other,) = [w for w in workers if w is not stuck]
            rounds, skipped = other.dead_letter_retries.rounds, other.dead_letter_retries.skipped
            # While the round waits: the other worker keeps trying and skips every round.
            deadline = time.monotonic() + 30
            while other.dead_letter_retries.skipped < skipped + 3:
                assert time.monotonic() < deadline, "the other worker ran no round meanwhile"
                assert waiting_on_row_locks(dep, group) == [stuck_pid], "a second worker replays the same letter"
                assert advisory_holders(dep, group) == [stuck_pid]
                assert other.dead_letter_retries.rounds == rounds
                time.sleep(0.1)
            assert letters(dep) == [("1", "pending")]
            holder.execute("COMMIT")
        wait_for(lambda: letters(dep) == [("1", "replayed")] and converged(dep), timeout=15,
                 what="the one replay to converge the key")
        assert stuck.dead_letter_retries.replayed == 1 and other.dead_letter_retries.replayed == 0
        wait_for(lambda: advisory_holders(dep, group) == [], timeout=10, what="the lock to be let go")
    assert q(dep, "warehouse", "SELECT size_bytes FROM application_documents WHERE document_id = 1") == [(20,)]
