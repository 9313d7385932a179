"""F1 scheme master: full sync, status map, DRAFTs unpublished, validation before commit."""

from __future__ import annotations

from typing import Any

import pytest

from civicsync.errors import ValidationFailedError
from civicsync.jobs.batch import run_batch
from fix_db import Deployment
from fix_flows import insert_schemes
from helpers import config_variant, digest

SCHEMES = [
    (1, "S-1", "Old age pension", "ACTIVE", 1500),
    (2, "S-2", "Draft scheme", "DRAFT", 100),
    (3, "S-3", "Seed subsidy", "SUSPENDED", 250),
    (4, "S-4", "Flood relief", "CLOSED", None),
    (5, "S-5", "Scholarship", "ACTIVE", 12000),
]


def portal_schemes(dep: Deployment) -> dict[int, tuple[Any, ...]]:
    with dep.connect("citizen") as conn:
        rows = conn.execute("SELECT scheme_id, code, name, benefit_summary, status FROM schemes").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_statuses_are_mapped_and_drafts_not_published(fresh_deployment: Deployment) -> None:
    insert_schemes(fresh_deployment, SCHEMES)
    result = run_batch(fresh_deployment.config(), "F1").raise_for_error()
    assert (result.counts.rows_read, result.counts.rows_written) == (5, 4)
    assert portal_schemes(fresh_deployment) == {
        1: ("S-1", "Old age pension", "CASH: 1500.00", "OPEN"),
        3: ("S-3", "Seed subsidy", "CASH: 250.00", "CLOSED"),
        4: ("S-4", "Flood relief", "CASH: ", "CLOSED"),
        5: ("S-5", "Scholarship", "CASH: 12000.00", "OPEN"),
    }


def test_rerun_is_idempotent_and_changes_propagate(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    insert_schemes(dep, SCHEMES)
    run_batch(dep.config(), "F1").raise_for_error()
    with dep.connect("citizen") as conn:
        before = digest(conn, "schemes")
    again = run_batch(dep.config(), "F1").raise_for_error()
    assert again.counts.rows_written == 0 and again.counts.rows_deleted == 0
    with dep.connect("citizen") as conn:
        assert digest(conn, "schemes") == before  # not even synced_at moved
    with dep.connect("warehouse") as conn:
        conn.execute("UPDATE schemes SET status = 'SUSPENDED' WHERE scheme_id = 1")
        conn.execute("UPDATE schemes SET status = 'ACTIVE' WHERE scheme_id = 2")  # a draft goes live
    third = run_batch(dep.config(), "F1").raise_for_error()
    assert third.counts.rows_written == 2
    schemes = portal_schemes(dep)
    assert schemes[1][3] == "CLOSED" and schemes[2][3] == "OPEN"


def test_scheme_gone_from_source_is_closed_not_deleted(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    insert_schemes(dep, SCHEMES + [(n, f"S-{n}", f"Scheme {n}", "ACTIVE", 1) for n in range(6, 12)])
    run_batch(dep.config(), "F1").raise_for_error()
    with dep.connect("warehouse") as conn:
        conn.execute("DELETE FROM schemes WHERE scheme_id = 5")
    result = run_batch(dep.config(), "F1").raise_for_error()
    assert result.counts.rows_deleted == 1
    assert portal_schemes(dep)[5][3] == "CLOSED"


@pytest.mark.parametrize("emptied", [False, True], ids=["too-many-missing", "below-min-rows"])
def test_failed_validation_leaves_target_untouched(fresh_deployment: Deployment, emptied: bool) -> None:
    dep = fresh_deployment
    insert_schemes(dep, SCHEMES)
    run_batch(dep.config(), "F1").raise_for_error()
    with dep.connect("citizen") as conn:
        before = digest(conn, "schemes")
    with dep.connect("warehouse") as conn:
        conn.execute("DELETE FROM schemes" + ("" if emptied else " WHERE scheme_id IN (1, 3, 5)"))
        conn.execute("UPDATE schemes SET name = 'renamed'")
    result = run_batch(dep.config(), "F1")
    assert not result.ok and isinstance(result.error, ValidationFailedError)
    assert "nothing was written" in str(result.error)
    assert ("at least 1 required" if emptied else "no longer in the source") in str(result.error)
    with dep.connect("citizen") as conn:
        assert digest(conn, "schemes") == before
        status, error = conn.execute(
            "SELECT status, error FROM civicsync.runs ORDER BY run_id DESC LIMIT 1").fetchone()  # type: ignore[misc]
    assert status == "failed" and "validation failed" in error


def test_row_breaking_a_rule_fails_the_whole_run(fresh_deployment: Deployment) -> None:
    """F1 is all-or-nothing: one row with an unmapped status fails the run, target unchanged."""
    dep = fresh_deployment
    insert_schemes(dep, SCHEMES)

    def strict_map(raw: dict[str, Any]) -> None:
        raw["flows"]["scheme_master"]["columns"]["status"] = {
            "from": "status", "map": {"ACTIVE": "OPEN", "SUSPENDED": "CLOSED", "DRAFT": "CLOSED"}}

    result = run_batch(config_variant(dep.environ, strict_map), "F1")
    assert isinstance(result.error, ValidationFailedError)
    assert "{'scheme_id': '4'}" in str(result.error) and "not in the value map" in str(result.error)
    assert portal_schemes(dep) == {}


def test_referential_sanity_check(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    insert_schemes(dep, SCHEMES)

    def needs_category_table(raw: dict[str, Any]) -> None:
        # Every published scheme's code must already be known to the portal's applications table
        # (an artificial rule; the point is that the check runs before commit).
        raw["flows"]["scheme_master"]["validate"]["references"] = [
            {"column": "scheme_id", "table": "public.applications", "ref_column": "scheme_id"}]

    result = run_batch(config_variant(dep.environ, needs_category_table), "F1")
    assert isinstance(result.error, ValidationFailedError)
    assert "4 rows have a scheme_id missing from public.applications.scheme_id" in str(result.error)
    assert portal_schemes(dep) == {}
