"""The checksum phase's mechanics, at a scale that fits a test (range sizes shrunk): a disagreeing range
is split at its own quantiles until small, equal ranges are never looked into, and when most rows
differ the comparison switches to checking everything through the chain."""

from __future__ import annotations

import pytest

from civicsync.jobs.batch import run_batch
from civicsync.reconcile import checksum, reconcile_flow
from fix_db import Deployment
from fix_reconcile import assert_converges, found, q

SCHEMES = 400


@pytest.fixture()
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checksum, "ROWS_PER_RANGE", 10)
    monkeypatch.setattr(checksum, "LEAF_ROWS", 4)
    monkeypatch.setattr(checksum, "FETCH_ROWS", 8)


def schemes(dep: Deployment) -> None:
    q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type,"
                        " benefit_amount, status) SELECT g, 'S' || g, 'Scheme ' || g, 'd', 'c', 'CASH', g * 10,"
                        " 'ACTIVE' FROM generate_series(1, %s) g", SCHEMES)


def test_a_difference_in_a_big_range_is_found_by_splitting_it(fresh_deployment: Deployment,
                                                              small_ranges: None) -> None:
    dep = fresh_deployment
    schemes(dep)
    run_batch(dep.config(), "F1").raise_for_error()
    q(dep, "citizen", "ANALYZE schemes")
    q(dep, "citizen", "UPDATE schemes SET name = 'x' WHERE scheme_id = 277")
    result = reconcile_flow(dep.config(), "F1")
    assert found(result)["different"] == {(("277",), ("name",))}
    # About 40 first ranges of 10 rows, one of them split further: far fewer keys fetched than rows.
    assert result.method == "checksum" and result.candidates == 1 and result.ranges > SCHEMES // 10
    assert_converges(dep.config(), "F1")


def test_a_target_that_differs_wholesale_is_compared_row_by_row(fresh_deployment: Deployment,
                                                               small_ranges: None) -> None:
    dep = fresh_deployment
    schemes(dep)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S1', 'Scheme 1',"
                      " 'c', 'OPEN')")  # the flow never ran: one row of 400
    result = reconcile_flow(dep.config(), "F1")
    assert result.method == "full" and any("disagree" in n for n in result.notes)
    assert result.counts["missing"] == SCHEMES - 1 and result.counts["different"] == 1  # no benefit summary yet
    assert_converges(dep.config(), "F1")
