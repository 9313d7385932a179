"""Reconciliation on the reference flows: nothing false on equal data, planted differences of every
class found with the right class and columns, repair converges through the flow's own path, and the
masking rules still hold after repair. One deployment per module, synced by the flows themselves;
every test repairs what it planted, so the next one starts from equal data again."""

from __future__ import annotations

import re
from typing import Any

from civicsync.config import LoadedConfig
from civicsync.reconcile import latest_results, reconcile_flow
from fix_db import Deployment
from fix_reconcile import assert_converges, found, q
from fix_reconcile import synced as synced  # the module's fixture (pytest finds it by name)

Synced = tuple[Deployment, LoadedConfig]


def test_nothing_differs_after_every_flow_ran_and_every_run_is_recorded(synced: Synced) -> None:
    _, config = synced
    methods = {}
    for name, flow in config.model.flows.items():
        result = reconcile_flow(config, name)
        assert result.error is None and result.found == 0, (name, result.as_dict())
        assert result.source_rows > 0, name
        methods[flow.id] = result.method
    # Rules that compile to SQL are compared by range checksums; the rest stream through the chain.
    assert {f for f, m in methods.items() if m == "checksum"} >= {"F1", "F2", "F7", "F11"}
    assert {f for f, m in methods.items() if m == "full"} >= {"F3", "F4", "F5", "F6", "F12"}  # F3: json reasons
    latest = {r["flow"]: r for r in latest_results(config)}
    assert set(latest) == set(config.model.flows)
    assert all(r["status"] == "equal" and r["finished_at"] for r in latest.values())


def test_checksums_of_equal_tables_need_no_candidates(synced: Synced) -> None:
    _, config = synced
    for flow in ("F1", "F7", "F11"):
        result = reconcile_flow(config, flow)
        assert result.method == "checksum" and result.candidates == 0, result.as_dict()


def test_f1_missing_extra_and_different_schemes(synced: Synced) -> None:
    dep, config = synced
    # A scheme the sync has not published yet, one renamed in the portal, two the source does not have.
    q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type, status)"
                        " VALUES (9000, 'N9000', 'New', 'd', 'c', 'CASH', 'ACTIVE')")
    renamed = int(q(dep, "citizen", "SELECT max(scheme_id) FROM schemes")[0][0])
    q(dep, "citizen", "UPDATE schemes SET name = 'Renamed', benefit_summary = 'x' WHERE scheme_id = %s", renamed)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES"
                      " (9001, 'X9001', 'Stray', 'c', 'OPEN'), (9002, 'X9002', 'Closed stray', 'c', 'CLOSED')")
    result = reconcile_flow(config, "F1")
    assert found(result) == {
        "missing": {(("9000",), ())}, "extra": {(("9001",), ())},
        "different": {((str(renamed),), ("name", "benefit_summary"))}, "rejected": set()}  # 9002 carries CLOSED
    assert not result.ok and result.status == "different"
    assert_converges(config, "F1")
    assert q(dep, "citizen", "SELECT scheme_id, status FROM schemes WHERE scheme_id >= 9000 ORDER BY 1") == [
        (9000, "OPEN"), (9001, "CLOSED"), (9002, "CLOSED")]


def synced_citizens(dep: Deployment, n: int) -> list[str]:
    """Citizens the registry and the portal both have."""
    registry = {r[0] for r in q(dep, "warehouse", "SELECT citizen_id::text FROM citizen_profiles")}
    portal = sorted(r[0] for r in q(dep, "citizen", "SELECT citizen_id::text FROM citizens") if r[0] in registry)
    return portal[:n]


def test_f2_differences_follow_field_ownership_and_repair_keeps_the_mask(synced: Synced) -> None:
    dep, config = synced
    renamed, edited, late = synced_citizens(dep, 3)
    # A registry record the batch missed (committed late, stamped before the watermark).
    gone = "00000000-0000-4000-8000-00000000aaaa"
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, updated_at) VALUES"
                        " (%s, '271828182845', 'Late Arrival', now() - interval '1 day')", gone)
    # Registry-owned fields changed in the portal: differences (the raw-looking id is one too).
    q(dep, "citizen", "UPDATE citizens SET full_name = 'Someone Else', national_id_masked = '123456789012'"
                      " WHERE citizen_id = %s", renamed)
    # A citizen's own newer edit of a citizen-owned field: theirs to keep, not a difference.
    q(dep, "citizen", "UPDATE citizens SET phone = '9000000001', updated_at = now() WHERE citizen_id = %s", edited)
    # A registry change the batch missed: a difference.
    q(dep, "warehouse", "UPDATE citizen_profiles SET email = 'late@example.in' WHERE citizen_id = %s", late)
    # A portal-only account: the flow keeps target rows it does not derive.
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES ('00000000-0000-4000-8000-00000000ffff',"
                      " 'Portal only')")
    result = reconcile_flow(config, "F2")
    assert found(result) == {
        "missing": {((gone,), ())}, "extra": set(), "rejected": set(),
        "different": {((renamed,), ("national_id_masked", "full_name")), ((late,), ("email",))}}
    assert_converges(config, "F2")
    rows = {r[0]: r[1:] for r in q(dep, "citizen", "SELECT citizen_id::text, full_name, national_id_masked, phone,"
                                                   " email FROM citizens WHERE citizen_id = ANY(%s::uuid[])",
                                   [gone, renamed, edited, late])}
    national = dict(q(dep, "warehouse", "SELECT citizen_id::text, national_id FROM citizen_profiles"
                                        " WHERE citizen_id = ANY(%s::uuid[])", [gone, renamed]))
    for cid in (gone, renamed):
        assert rows[cid][1] == f"XXXX-XXXX-{national[cid][-4:]}"
    assert rows[renamed][0] != "Someone Else" and rows[edited][2] == "9000000001" and rows[late][3] == "late@example.in"
    assert no_raw_national_ids(dep)


def no_raw_national_ids(dep: Deployment) -> bool:
    raw = {r[0] for r in q(dep, "warehouse", "SELECT national_id FROM citizen_profiles")}
    dump = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM citizens t")[0][0]
    return not any(n in dump for n in raw)


def test_f3_top_n_membership_rank_and_band(synced: Synced) -> None:
    dep, config = synced
    cid = q(dep, "citizen", "SELECT citizen_id::text FROM eligibility_hints GROUP BY 1 HAVING count(*) >= 3"
                            " ORDER BY 1 LIMIT 1")[0][0]
    hints = q(dep, "citizen", "SELECT scheme_id, rank, score_band FROM eligibility_hints WHERE citizen_id = %s"
                              " ORDER BY rank", cid)
    (dropped, *_), (banded, _, band, *_) = hints[0], hints[1]
    stray = q(dep, "citizen", "SELECT min(scheme_id) FROM schemes s WHERE NOT EXISTS (SELECT 1 FROM"
                              " eligibility_hints h WHERE h.citizen_id = %s AND h.scheme_id = s.scheme_id)", cid)[0][0]
    q(dep, "citizen", "DELETE FROM eligibility_hints WHERE citizen_id = %s AND scheme_id = %s", cid, dropped)
    q(dep, "citizen", "UPDATE eligibility_hints SET score_band = %s WHERE citizen_id = %s AND scheme_id = %s",
      "MEDIUM" if band == "HIGH" else "HIGH", cid, banded)
    q(dep, "citizen", "INSERT INTO eligibility_hints (citizen_id, scheme_id, rank, score_band) VALUES (%s, %s, 5,"
                      " 'HIGH')", cid, stray)
    result = reconcile_flow(config, "F3")
    assert found(result) == {"missing": {((cid, str(dropped)), ())}, "extra": {((cid, str(stray)), ())},
                             "different": {((cid, str(banded)), ("score_band",))}, "rejected": set()}
    assert_converges(config, "F3")
    assert q(dep, "citizen", "SELECT scheme_id, rank, score_band FROM eligibility_hints WHERE citizen_id = %s"
                             " ORDER BY rank", cid) == hints
    scores = {str(r[0]) for r in q(dep, "warehouse", "SELECT score FROM eligibility_predictions")}
    dump = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM eligibility_hints t")[0][0]
    assert not any(s in dump for s in scores)  # the raw score never reaches the portal


def test_f4_forward_only_lifecycle(synced: Synced) -> None:
    dep, config = synced
    approved = q(dep, "warehouse", "SELECT application_id FROM application_decisions WHERE decision_code = 'APPR'"
                                   " ORDER BY 1 LIMIT 3")
    behind, withdrawn, noted = (int(r[0]) for r in approved)
    before = q(dep, "citizen", "SELECT application_id, status, decision_note, updated_at FROM applications"
                               " WHERE application_id IN (%s, %s)", withdrawn, noted)
    q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED' WHERE application_id = %s", behind)
    q(dep, "citizen", "UPDATE applications SET status = 'WITHDRAWN' WHERE application_id = %s", withdrawn)
    q(dep, "citizen", "UPDATE applications SET decision_note = 'edited' WHERE application_id = %s", noted)
    result = reconcile_flow(config, "F4")
    assert result.method == "full"
    # Behind the decisions: a difference. Final, or at the same stage: the event path writes nothing.
    assert {(k, kind) for kind, keys in found(result).items() for k, _ in keys} == {((str(behind),), "different")}
    assert_converges(config, "F4")
    assert q(dep, "citizen", "SELECT application_id, status FROM applications WHERE application_id IN (%s, %s)"
                             " ORDER BY 1", behind, withdrawn) == sorted(
        [(behind, _status_of_decisions(dep, behind)), (withdrawn, "WITHDRAWN")])
    officers = {r[0] for r in q(dep, "warehouse", "SELECT officer_id FROM application_decisions")}
    dump = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM applications t")[0][0]
    assert not any(o in dump for o in officers)
    for app, status, note, updated in before:  # the portal edits F4 rightly left alone are F6's source
        q(dep, "citizen", "UPDATE applications SET status = %s, decision_note = %s, updated_at = %s"
                          " WHERE application_id = %s", status, note, updated, app)


def _status_of_decisions(dep: Deployment, application_id: int) -> str:
    codes = {r[0] for r in q(dep, "warehouse", "SELECT decision_code FROM application_decisions"
                                               " WHERE application_id = %s", application_id)}
    return "DISBURSED" if "DISB" in codes else "APPROVED"


def test_f5_a_portal_edit_the_event_path_missed(synced: Synced) -> None:
    dep, config = synced
    registry = {r[0] for r in q(dep, "warehouse", "SELECT citizen_id::text FROM citizen_profiles")}
    cid = min(r[0] for r in q(dep, "citizen", "SELECT citizen_id::text FROM citizens") if r[0] in registry)
    q(dep, "citizen", "UPDATE citizens SET pincode = '999999', updated_at = now() WHERE citizen_id = %s", cid)
    result = reconcile_flow(config, "F5")
    # (The portal edit planted for F2 is, rightly, an F5 difference too.)
    assert ((cid,), ("pincode", "updated_at")) in found(result)["different"]
    assert_converges(config, "F5")
    assert q(dep, "warehouse", "SELECT pincode FROM citizen_profiles WHERE citizen_id = %s", cid) == [("999999",)]


def test_f6_full_method_and_json_masking_after_repair(synced: Synced) -> None:
    dep, config = synced
    (leaked, gone), extra = [int(r[0]) for r in q(dep, "warehouse", "SELECT application_id FROM applications"
                                                                    " ORDER BY 1 LIMIT 2")], 990001
    q(dep, "warehouse", "UPDATE applications SET form_data = form_data || '{\"bank_account\": \"123456789012\"}'"
                        " WHERE application_id = %s", leaked)
    q(dep, "warehouse", "DELETE FROM applications WHERE application_id = %s", gone)
    q(dep, "warehouse", "INSERT INTO applications (application_id, citizen_ref, scheme_id, status) VALUES (%s, 'r', 1,"
                        " 'SUBMITTED')", extra)
    result = reconcile_flow(config, "F6")
    assert found(result) == {"missing": {((str(gone),), ())}, "extra": {((str(extra),), ())},
                             "different": {((str(leaked),), ("form_data",))}, "rejected": set()}
    assert_converges(config, "F6")
    [(form,)] = q(dep, "warehouse", "SELECT form_data FROM applications WHERE application_id = %s", leaked)
    [(raw,)] = q(dep, "citizen", "SELECT form_data->>'bank_account' FROM applications WHERE application_id = %s",
                 leaked)
    assert form["bank_account"] == "X" * (len(raw) - 4) + raw[-4:] and form.get("national_id") is None
    dump = q(dep, "warehouse", "SELECT string_agg(t::text, ' ') FROM applications t")[0][0]
    assert raw not in dump and "123456789012" not in dump


def test_f7_documents(synced: Synced) -> None:
    dep, config = synced
    gone, resized = (int(r[0]) for r in q(dep, "warehouse", "SELECT document_id FROM application_documents"
                                                            " ORDER BY 1 LIMIT 2"))
    q(dep, "warehouse", "DELETE FROM application_documents WHERE document_id = %s", gone)
    q(dep, "warehouse", "UPDATE application_documents SET size_bytes = size_bytes + 1, sha256 = 'x'"
                        " WHERE document_id = %s", resized)
    q(dep, "warehouse", "INSERT INTO application_documents (document_id, application_id, doc_type) VALUES"
                        " (990001, 1, 'PHOTO')")
    result = reconcile_flow(config, "F7")
    assert found(result) == {"missing": {((str(gone),), ())}, "extra": {(("990001",), ())},
                             "different": {((str(resized),), ("size_bytes", "sha256"))}, "rejected": set()}
    assert result.candidates == 3  # drilled down to exactly the planted keys
    assert_converges(config, "F7")


def test_f11_aggregates_are_recomputed_for_the_affected_days(synced: Synced) -> None:
    dep, config = synced
    rows = q(dep, "warehouse", "SELECT day, district, event_type FROM analytics.user_behavior_daily ORDER BY 1, 2, 3")
    (d1, dist1, ev1), (d2, dist2, ev2) = rows[0], rows[-1]
    q(dep, "warehouse", "DELETE FROM analytics.user_behavior_daily WHERE (day, district, event_type) = (%s, %s, %s)",
      d1, dist1, ev1)
    q(dep, "warehouse", "UPDATE analytics.user_behavior_daily SET events = events + 1, sessions = sessions + 1"
                        " WHERE (day, district, event_type) = (%s, %s, %s)", d2, dist2, ev2)
    q(dep, "warehouse", "INSERT INTO analytics.user_behavior_daily VALUES (%s, 'Nowhere', 'login', 1, 1, 1, 1)", d2)
    result = reconcile_flow(config, "F11")
    assert found(result) == {
        "missing": {((str(d1), dist1, ev1), ())}, "extra": {((str(d2), "Nowhere", "login"), ())},
        "different": {((str(d2), dist2, ev2), ("events", "sessions"))}, "rejected": set()}
    assert_converges(config, "F11")


def test_f12_redaction_and_pseudonym_hold_after_repair(synced: Synced) -> None:
    dep, config = synced
    gone, leaked = (int(r[0]) for r in q(dep, "warehouse", "SELECT feedback_id FROM analytics.feedback"
                                                           " ORDER BY 1 LIMIT 2"))
    raw_citizen = q(dep, "citizen", "SELECT citizen_id::text FROM feedback WHERE feedback_id = %s", leaked)[0][0]
    q(dep, "warehouse", "DELETE FROM analytics.feedback WHERE feedback_id = %s", gone)
    q(dep, "warehouse", "UPDATE analytics.feedback SET comment = 'call 6000123456', citizen_ref = %s"
                        " WHERE feedback_id = %s", raw_citizen, leaked)
    q(dep, "warehouse", "INSERT INTO analytics.feedback (feedback_id, citizen_ref, rating, created_at) VALUES"
                        " (990001, 'r', 3, now())")  # kept: the flow keeps rows it does not derive
    result = reconcile_flow(config, "F12")
    assert found(result) == {"missing": {((str(gone),), ())}, "extra": set(), "rejected": set(),
                             "different": {((str(leaked),), ("citizen_ref", "comment"))}}
    assert_converges(config, "F12")
    dump = q(dep, "warehouse", "SELECT string_agg(t::text, ' ') FROM analytics.feedback t")[0][0]
    assert "6000123456" not in dump and raw_citizen not in dump
    assert not re.search(r"\b\d{10}\b", _comments(dep))


def _comments(dep: Deployment) -> str:
    return " ".join(str(r[0]) for r in q(dep, "warehouse", "SELECT comment FROM analytics.feedback"
                                                           " WHERE comment IS NOT NULL"))


def test_runs_and_differences_are_recorded_by_key_and_column_only(synced: Synced) -> None:
    dep, config = synced
    q(dep, "citizen", "UPDATE schemes SET name = 'Secret name' WHERE scheme_id = (SELECT min(scheme_id) FROM schemes)")
    result = reconcile_flow(config, "F1", repair=True)
    rows: list[tuple[Any, ...]] = q(
        dep, "citizen", "SELECT r.flow, r.status, r.method, r.different, r.repaired, d.class, d.row_key, d.columns,"
                        " d.repaired FROM civicsync.reconcile_runs r JOIN civicsync.reconcile_differences d USING"
                        " (run_id) WHERE run_id = %s", result.run_id)
    assert rows == [("scheme_master", "repaired", "checksum", 1, 1, "different",
                     {"scheme_id": result.differences[0].key[0]}, ["name"], True)]
    stored = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM civicsync.reconcile_differences t")[0][0]
    assert "Secret name" not in stored
    latest = {r["flow"]: r for r in latest_results(config)}["scheme_master"]
    assert latest["status"] == "repaired" and latest["samples"]["different"][0]["columns"] == ["name"]
