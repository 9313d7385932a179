"""Issue 9 item 8 (reconcile half): `reconcile F4` checks the lifecycle rule. Per application, its
decisions are folded in the lifecycle's order with the apply path's own ``supersedes`` (forward by
stage, the latest within a stage, a final status never changes); the portal's row is compared with
the result. Real PostgreSQL, the reference deployment synced by its own flows."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from civicsync.apply.cdc import CdcFlowApplier
from civicsync.config import LoadedConfig
from civicsync.db.connect import connect
from civicsync.deadletters.cdc import apply_events, current_events
from civicsync.reconcile import reconcile_flow
from fix_db import Deployment
from fix_reconcile import found, q
from fix_reconcile import synced as synced  # the module's fixture (pytest finds it by name)

Synced = tuple[Deployment, LoadedConfig]
CODES = ["RCVD", "UNDER_REVIEW", "PEND_DOC", "APPR", "REJ", "DISB"]


def _decide(dep: Deployment, app: int, codes: list[str]) -> None:
    """Replace the application's decisions with ``codes``, one second apart, in decision_id order."""
    q(dep, "warehouse", "DELETE FROM application_decisions WHERE application_id = %s", app)
    first = int(q(dep, "warehouse", "SELECT coalesce(max(decision_id), 0) + 1 FROM application_decisions")[0][0])
    citizen, scheme = q(dep, "citizen", "SELECT citizen_id, scheme_id FROM applications WHERE application_id = %s",
                        app)[0]
    for i, code in enumerate(codes):
        q(dep, "warehouse", "INSERT INTO application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                            " decision_code, reason, officer_id, decided_at) VALUES (%s, %s, %s, %s, %s, %s,"
                            " 'OFF-4242', timestamptz '2026-03-01 10:00:00+00' + %s * interval '1 s')",
          first + i, app, citizen, scheme, code, f"reason {code}", i)


def _portal(dep: Deployment, app: int, status: str, code: str, second: int) -> None:
    q(dep, "citizen", "UPDATE applications SET status = %s, decision_note = %s,"
                      " updated_at = timestamptz '2026-03-01 10:00:00+00' + %s * interval '1 s'"
                      " WHERE application_id = %s", status, f"reason {code}", second, app)


def test_f4_is_compared_with_the_lifecycle_fold_and_repaired_to_it(synced: Synced) -> None:
    dep, config = synced
    apps = [int(r[0]) for r in q(dep, "citizen", "SELECT a.application_id FROM applications a ORDER BY 1 LIMIT 400")]
    wh = {int(r[0]) for r in q(dep, "warehouse", "SELECT application_id FROM applications")}
    stale, withdrawn, right = [a for a in apps if a in wh][:3]
    for app in (stale, withdrawn, right):
        _decide(dep, app, ["UNDER_REVIEW", "PEND_DOC"])
    _portal(dep, stale, "UNDER_REVIEW", "UNDER_REVIEW", 0)  # the second decision never applied
    _portal(dep, withdrawn, "WITHDRAWN", "UNDER_REVIEW", 0)  # final: a later decision would not change it
    _portal(dep, right, "DOCUMENTS_REQUIRED", "PEND_DOC", 1)  # what the rule gives: equal
    result = reconcile_flow(config, "F4")
    assert result.error is None, result.error
    different = found(result)["different"]
    assert {k for k, _ in different} == {(str(stale),)}, result.as_dict()
    assert all("status" in cols for _, cols in different)
    repaired = reconcile_flow(config, "F4", repair=True)
    assert repaired.error is None and repaired.repaired == repaired.found >= 1, repaired.as_dict()
    assert q(dep, "citizen", "SELECT status, decision_note FROM applications WHERE application_id = %s",
             stale) == [("DOCUMENTS_REQUIRED", "reason PEND_DOC")]
    assert q(dep, "citizen", "SELECT status FROM applications WHERE application_id = %s", withdrawn) == [("WITHDRAWN",)]
    again = reconcile_flow(config, "F4")
    assert again.error is None and again.found == 0 and again.status == "equal", again.as_dict()


def test_within_a_stage_the_latest_decision_is_expected(synced: Synced) -> None:
    dep, config = synced
    wh = {int(r[0]) for r in q(dep, "warehouse", "SELECT application_id FROM applications")}
    app = max(int(r[0]) for r in q(dep, "citizen", "SELECT application_id FROM applications") if int(r[0]) in wh)
    # Back within the stage after documents were asked for; an earlier stage after that is ignored.
    _decide(dep, app, ["PEND_DOC", "UNDER_REVIEW", "RCVD"])
    _portal(dep, app, "DOCUMENTS_REQUIRED", "PEND_DOC", 0)
    result = reconcile_flow(config, "F4")
    assert {k for k, _ in found(result)["different"]} == {(str(app),)}, result.as_dict()
    _portal(dep, app, "UNDER_REVIEW", "UNDER_REVIEW", 1)
    again = reconcile_flow(config, "F4")
    assert again.error is None and again.found == 0, again.as_dict()


@settings(max_examples=12, deadline=None)
@given(codes=st.lists(st.sampled_from(CODES), min_size=1, max_size=5), cuts=st.sets(st.integers(1, 4)),
       start=st.sampled_from(["SUBMITTED", "UNDER_REVIEW", "DOCUMENTS_REQUIRED", "APPROVED", "WITHDRAWN"]))
def test_whatever_the_batching_the_applied_portal_is_equal_and_a_stale_one_differs(
        synced: Synced, codes: list[str], cuts: set[int], start: str) -> None:
    dep, config = synced
    wh = {int(r[0]) for r in q(dep, "warehouse", "SELECT application_id FROM applications")}
    app = sorted(int(r[0]) for r in q(dep, "citizen", "SELECT application_id FROM applications") if int(r[0]) in wh)[5]
    _decide(dep, app, codes)
    q(dep, "citizen", "UPDATE applications SET status = %s, decision_note = NULL WHERE application_id = %s", start, app)
    before = q(dep, "citizen", "SELECT status, decision_note, updated_at FROM applications WHERE application_id = %s",
               app)
    # The decisions go through the event path's own applier, split into batches anywhere.
    applier = CdcFlowApplier(config, "decision_updates")
    with connect(dep.warehouse_dsn, purpose="test", autocommit=True) as src, \
            connect(dep.citizen_dsn, purpose="test") as tgt:
        events, _ = current_events(src, applier, [{"application_id": str(app)}])
        edges = [0, *sorted(c for c in cuts if c < len(events)), len(events)]
        for a, b in pairwise(edges):
            assert apply_events(tgt, applier, events[a:b]).dead_letters == []
        tgt.commit()
    result = reconcile_flow(config, "F4")
    assert result.error is None and result.found == 0, (codes, cuts, start, result.as_dict())
    after = q(dep, "citizen", "SELECT status, decision_note, updated_at FROM applications WHERE application_id = %s",
              app)
    # Put the portal back where it was: a difference exactly when the decisions had moved it.
    q(dep, "citizen", "UPDATE applications SET (status, decision_note, updated_at) = (%s, %s, %s)"
                      " WHERE application_id = %s", *before[0], app)
    stale = reconcile_flow(config, "F4")
    assert {k for k, _ in found(stale)["different"]} == ({(str(app),)} if after != before else set()), (
        codes, cuts, start, stale.as_dict())
    q(dep, "citizen", "UPDATE applications SET (status, decision_note, updated_at) = (%s, %s, %s)"
                      " WHERE application_id = %s", *after[0], app)
