"""Red team (issue 9 item 1, issue 11 item 4): a top-N flow (F3) under REPLICA IDENTITY FULL when a
prediction's key changes or it moves from one citizen (partition) to another, in one batch and across
batches. The portal's hints are compared with an independent SQL computation of the top 5 from the
warehouse's rows (and with `reconcile F3`)."""

from __future__ import annotations

from typing import Any

from civicsync.reconcile import reconcile_flow
from fix_cdc import CIT, cdc_config, paused, portal_basics, running, started, wait_for
from fix_db import Deployment, q

CIT2 = "00000000-0000-4000-8000-0000000000b2"
EXPECTED = """
SELECT citizen_id::text, scheme_id, rank::int, CASE WHEN score < 0.75 THEN 'MEDIUM' ELSE 'HIGH' END
FROM (SELECT *, row_number() OVER (PARTITION BY citizen_id ORDER BY score DESC, prediction_id) AS rank
      FROM eligibility_predictions WHERE status IN ('ELIGIBLE', 'LIKELY')) p
WHERE rank <= 5 ORDER BY 1, 2"""


def _expected(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", EXPECTED)


def _actual(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "citizen", "SELECT citizen_id::text, scheme_id, rank::int, score_band FROM eligibility_hints"
                             " ORDER BY 1, 2")


def _setup(dep: Deployment) -> None:
    portal_basics(dep)
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'Bala')", CIT2)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) SELECT i, 'S' || i, 'n', 'C',"
                      " 'OPEN' FROM generate_series(7, 12) i")
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name) VALUES (%s, '1', 'A'),"
                        " (%s, '2', 'B')", CIT, CIT2)
    q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type, status)"
                        " SELECT i, 'S' || i, 'n', 'd', 'c', 'CASH', 'ACTIVE' FROM generate_series(1, 12) i")
    # Citizen 1: schemes 1-6 (6 candidates: one outside the top 5); citizen 2: schemes 7-9.
    rows = [(i, CIT, i, 0.50 + i / 20) for i in range(1, 7)] + [(i, CIT2, i, 0.40 + i / 30) for i in range(7, 10)]
    for pid, cit, scheme, score in rows:
        q(dep, "warehouse", "INSERT INTO eligibility_predictions (prediction_id, citizen_id, scheme_id, score, status,"
                            " model_version) VALUES (%s, %s, %s, %s, 'ELIGIBLE', 'm')", pid, cit, scheme, score)


MOVES = [
    "UPDATE eligibility_predictions SET citizen_id = '{c2}' WHERE prediction_id = 6",        # top of 1 → 2
    "UPDATE eligibility_predictions SET prediction_id = 60 WHERE prediction_id = 2",          # key change
    "UPDATE eligibility_predictions SET prediction_id = 70, citizen_id = '{c1}', score = 0.99 WHERE prediction_id = 7",
    "DELETE FROM eligibility_predictions WHERE prediction_id = 60",
    "UPDATE eligibility_predictions SET prediction_id = 2, status = 'INELIGIBLE' WHERE prediction_id = 3",
    "UPDATE eligibility_predictions SET prediction_id = 3, status = 'LIKELY' WHERE prediction_id = 2",
]


def _moves() -> list[str]:
    return [m.format(c1=CIT, c2=CIT2) for m in MOVES]


def test_topn_key_and_partition_changes_across_batches(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    _setup(dep)
    config = cdc_config(dep)
    with running(config, "warehouse", ["F3"]):
        wait_for(lambda: _actual(dep) == _expected(dep), what="the snapshot")
        for stmt in _moves():
            q(dep, "warehouse", stmt)
            wait_for(lambda: _actual(dep) == _expected(dep), timeout=15, what=stmt)
    result = reconcile_flow(config, "F3")
    assert result.counts == dict.fromkeys(result.counts, 0)


def test_topn_key_and_partition_changes_in_one_batch(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    _setup(dep)
    config = cdc_config(dep)
    with paused(config, "warehouse", ["F3"]) as (worker, sizes):
        for stmt in _moves():  # after the slot's snapshot point: all in one batch after the snapshot
            q(dep, "warehouse", stmt)
        with started(worker):
            wait_for(lambda: _actual(dep) == _expected(dep), timeout=15, what="one batch")
        assert sizes  # the moves arrived in the stream (not in the snapshot)
    assert q(dep, "citizen", "SELECT count(*) FROM civicsync.dead_letters") == [(0,)]
