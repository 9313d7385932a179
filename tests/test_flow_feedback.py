"""F12 feedback: keyed pseudonym for the citizen, PII redacted from free text, incremental."""

from __future__ import annotations

import hashlib
import hmac

from civicsync.jobs.batch import run_batch
from fix_db import PSEUDONYM_KEY, Deployment

C1 = "00000000-0000-4000-8000-000000000001"

COMMENTS = {
    1: ("Call me on +91 98765 43210 or mail asha.rao@mail.example.org, my id 2345 6789 0123",
        "Call me on [PHONE] or mail [EMAIL], my id [ID]"),
    2: ("Great scheme, thanks!", "Great scheme, thanks!"),
    3: (None, None),
}


def insert_feedback(dep: Deployment, ids: list[int]) -> None:
    with dep.connect("citizen") as conn:
        conn.execute("INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A') ON CONFLICT DO NOTHING", (C1,))
        for fid in ids:
            conn.execute("INSERT INTO feedback (feedback_id, citizen_id, rating, comment, created_at)"
                         " VALUES (%s, %s, 4, %s, now())", (fid, C1, COMMENTS[fid][0]))


def test_pseudonym_and_redaction(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    insert_feedback(dep, [1, 2, 3])
    result = run_batch(dep.config(), "F12").raise_for_error()
    assert result.counts.rows_written == 3
    with dep.connect("warehouse") as conn:
        rows = conn.execute("SELECT feedback_id, citizen_ref, comment FROM analytics.feedback ORDER BY 1").fetchall()
    expected_ref = hmac.new(PSEUDONYM_KEY.encode(), C1.encode(), hashlib.sha256).hexdigest()[:32]
    assert rows == [(fid, expected_ref, COMMENTS[fid][1]) for fid in (1, 2, 3)]


def test_pseudonym_is_stable_and_incremental(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    insert_feedback(dep, [1])
    run_batch(dep.config(), "F12").raise_for_error()
    insert_feedback(dep, [2])
    result = run_batch(dep.config(), "F12").raise_for_error()
    assert (result.counts.rows_read, result.counts.rows_written) == (1, 1)
    with dep.connect("warehouse") as conn:
        refs = conn.execute("SELECT DISTINCT citizen_ref FROM analytics.feedback").fetchall()
    assert len(refs) == 1
