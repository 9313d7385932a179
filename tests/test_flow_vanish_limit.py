"""Issue 9 item 14: F1's vanish limit counts only rows that newly vanish, among rows still live."""

from __future__ import annotations

from civicsync.errors import ValidationFailedError
from civicsync.jobs.batch import run_batch
from fix_db import Deployment
from fix_flows import insert_schemes


def _retire(dep: Deployment, *scheme_ids: int) -> None:
    with dep.connect("warehouse") as conn:
        conn.execute("DELETE FROM schemes WHERE scheme_id = ANY(%s)", (list(scheme_ids),))


def _closed(dep: Deployment) -> list[int]:
    with dep.connect("citizen") as conn:
        return [r[0] for r in conn.execute("SELECT scheme_id FROM schemes WHERE status = 'CLOSED' ORDER BY 1")]


def test_vanish_limit_counts_only_rows_that_newly_vanish(fresh_deployment: Deployment) -> None:
    """Issue 9 item 14: with max_missing_ratio 0.2, schemes retired one run at a time never add up.

    Semantics: the ratio is of the rows that would newly vanish in this run among the target rows
    still live (not already CLOSED by an earlier vanish)."""
    dep = fresh_deployment
    insert_schemes(dep, [(i, f"S-{i}", f"Scheme {i}", "ACTIVE", 100) for i in range(1, 11)])
    config = dep.config()
    run_batch(config, "F1").raise_for_error()
    for retired in (1, 2, 3):  # 1 of 10, 1 of 9, 1 of 8 live rows: each within 20 %
        _retire(dep, retired)
        run_batch(config, "F1").raise_for_error()
    assert _closed(dep) == [1, 2, 3]
    assert run_batch(config, "F1").raise_for_error().counts.rows_written == 0  # the closed ones stay quiet
    _retire(dep, 4, 5)  # 2 of 7 live rows at once: more than 20 %
    result = run_batch(config, "F1")
    assert isinstance(result.error, ValidationFailedError)
    assert "2 of 7 live target rows are no longer" in str(result.error)
    assert _closed(dep) == [1, 2, 3]


def test_vanish_limit_six_schemes(fresh_deployment: Deployment) -> None:
    """The issue's case: 6 schemes, 2 retired in separate runs (1 of 6, then 1 of 5 live: allowed);
    a third is 1 of the 4 still live, 25 %: refused, because a quarter of what is live would go at
    once, not because of the two retired before."""
    dep = fresh_deployment
    insert_schemes(dep, [(i, f"S-{i}", f"Scheme {i}", "ACTIVE", 100) for i in range(1, 7)])
    config = dep.config()
    run_batch(config, "F1").raise_for_error()
    for retired in (1, 2):
        _retire(dep, retired)
        run_batch(config, "F1").raise_for_error()
    _retire(dep, 3)
    result = run_batch(config, "F1")
    assert isinstance(result.error, ValidationFailedError)
    assert "1 of 4 live target rows are no longer" in str(result.error)
    insert_schemes(dep, [(1, "S-1", "Scheme 1", "ACTIVE", 100)])  # a retired scheme comes back: live again
    run_batch(config, "F1").raise_for_error()  # 1 of 5 live: allowed
    assert _closed(dep) == [2, 3]
