"""CDC flows F3-F7 end to end: real slots, real replication connections, real target writes."""

from __future__ import annotations

from typing import Any

from fix_cdc import CIT, cdc_config, decide, portal_basics, running, status_of, wait_for
from fix_db import Deployment, q


def test_f7_document_metadata_never_carries_file_names(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    config = cdc_config(dep)
    with running(config, "citizen", ["F7"]):
        q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED' WHERE application_id = 100")
        q(dep, "citizen", "INSERT INTO application_documents (document_id, application_id, doc_type, file_name,"
                          " mime_type, size_bytes, storage_uri, sha256) VALUES (1, 100, 'ID', 'aadhaar_asha.pdf',"
                          " 'application/pdf', 1234, 's3://portal-docs/x/aadhaar_asha.pdf', 'ab12')")
        q(dep, "citizen", "UPDATE application_documents SET size_bytes = 2000 WHERE document_id = 1")
        wait_for(lambda: q(dep, "warehouse", "SELECT size_bytes FROM application_documents") == [(2000,)],
                 what="document metadata")
        q(dep, "citizen", "DELETE FROM application_documents WHERE document_id = 1")
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(0,)],
                 what="the delete")
    dump = q(dep, "warehouse", "SELECT string_agg(t::text, ' ') FROM application_documents t")
    assert dump == [(None,)]


def test_f4_decisions_move_forward_only(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED'")
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                      " VALUES (101, %s, 2, 'WITHDRAWN')", CIT)
    with running(cdc_config(dep), "warehouse", ["F4"]):
        decide(dep, 1, 100, "UNDER_REVIEW")
        wait_for(lambda: status_of(dep, 100) == "UNDER_REVIEW", what="UNDER_REVIEW")
        decide(dep, 2, 100, "APPR")
        wait_for(lambda: status_of(dep, 100) == "APPROVED", what="APPROVED")
        decide(dep, 3, 100, "RCVD")   # late, older decision
        decide(dep, 4, 101, "APPR")   # the citizen withdrew: final
        decide(dep, 5, 100, "DISB")
        wait_for(lambda: status_of(dep, 100) == "DISBURSED", what="DISBURSED")
        decide(dep, 6, 100, "REJ")    # after a final status
    assert status_of(dep, 101) == "WITHDRAWN" and status_of(dep, 100) == "DISBURSED"
    assert q(dep, "citizen", "SELECT decision_note FROM applications WHERE application_id = 100") == [("reason DISB",)]
    dump = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM applications t")[0][0]
    assert "OFF-4242" not in dump


def test_f4_decision_for_an_application_not_yet_in_the_portal_waits_and_converges(
        fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    with running(cdc_config(dep), "warehouse", ["F4"]):
        decide(dep, 1, 102, "UNDER_REVIEW")
        wait_for(lambda: q(dep, "citizen", "SELECT error_kind, status FROM civicsync.dead_letters")
                 == [("missing_target", "pending")], what="the dead letter")
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (102, %s, 3, 'SUBMITTED')", CIT)
        wait_for(lambda: status_of(dep, 102) == "UNDER_REVIEW", timeout=15, what="the retried decision")
    assert q(dep, "citizen", "SELECT status FROM civicsync.dead_letters") == [("replayed",)]


def test_f6_submissions_events_and_form_masking(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    with running(cdc_config(dep), "citizen", ["F6"]):
        q(dep, "citizen", "UPDATE applications SET form_data = form_data || '{\"x\": 1}'")  # still a DRAFT
        q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED', submitted_at = now(), updated_at = now()")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("SUBMITTED",)],
                 what="the submission")
        for status in ("UNDER_REVIEW", "DOCUMENTS_REQUIRED", "UNDER_REVIEW"):
            q(dep, "citizen", "UPDATE applications SET status = %s, updated_at = clock_timestamp()", status)
        q(dep, "citizen", "UPDATE applications SET decision_note = 'n'")  # no status change: no event
        wait_for(lambda: len(q(dep, "warehouse", "SELECT 1 FROM application_events")) == 4, what="4 events")
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (103, %s, 2, 'DRAFT')", CIT)
        q(dep, "citizen", "UPDATE applications SET status = 'APPROVED', updated_at = clock_timestamp()"
                          " WHERE application_id = 100")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("APPROVED",)],
                 what="the approval")
    events = q(dep, "warehouse", "SELECT event_type FROM application_events ORDER BY occurred_at")
    assert [e[0] for e in events] == ["SUBMITTED", "UNDER_REVIEW", "DOCUMENTS_REQUIRED", "UNDER_REVIEW", "APPROVED"]
    assert q(dep, "warehouse", "SELECT count(*) FROM application_events WHERE source_lsn IS NULL") == [(0,)]
    [(ref, form)] = q(dep, "warehouse", "SELECT citizen_ref, form_data FROM applications")
    assert len(ref) == 32 and CIT not in ref
    # deny by default (issue 10.2): the undeclared member "x" does not leave the portal
    assert form == {"bank_account": "XXXXXXXX9012", "national_id": None, "nominee": {"phone": "[PHONE]"}}


def test_f5_citizen_owned_fields_update_and_registry_fields_become_requests(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, phone, updated_at)"
                        " VALUES (%s, '234567890123', 'Asha', '9876543210', now() - interval '2 days')", CIT)
    with running(cdc_config(dep), "citizen", ["F5"]):
        q(dep, "citizen", "UPDATE citizens SET phone = '9000000009', updated_at = now()")
        wait_for(lambda: q(dep, "warehouse", "SELECT phone FROM citizen_profiles") == [("9000000009",)],
                 what="the phone")
        q(dep, "citizen", "UPDATE citizens SET full_name = 'Asha Kulkarni', updated_at = now()")
        q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES"
                          " ('00000000-0000-4000-8000-0000000000c2', 'New')")  # no golden record: skipped
        wait_for(lambda: q(dep, "warehouse", "SELECT field, old_value, new_value, status FROM profile_change_requests")
                 == [("full_name", "Asha", "Asha Kulkarni", "PENDING")], what="the change request")
        q(dep, "citizen", "UPDATE citizens SET email = 'a@example.org', updated_at = now()")  # name still differs
        wait_for(lambda: q(dep, "warehouse", "SELECT email FROM citizen_profiles") == [("a@example.org",)],
                 what="the email")
    assert q(dep, "warehouse", "SELECT full_name, national_id FROM citizen_profiles") == [("Asha", "234567890123")]
    assert q(dep, "warehouse", "SELECT count(*) FROM profile_change_requests") == [(1,)]  # not duplicated
    assert q(dep, "warehouse", "SELECT count(*) FROM citizen_profiles") == [(1,)]


def hints(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "citizen", "SELECT scheme_id, rank, score_band FROM eligibility_hints ORDER BY rank")


def test_f3_top_five_per_citizen_recomputed_on_demotion_and_delete(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name) VALUES (%s, '1', 'A')", CIT)
    q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type, status)"
                        " SELECT i, 'S' || i, 'n', 'd', 'c', 'CASH', 'ACTIVE' FROM generate_series(1, 6) i")
    with running(cdc_config(dep), "warehouse", ["F3"]):
        q(dep, "warehouse", "INSERT INTO eligibility_predictions (prediction_id, citizen_id, scheme_id, score,"
                            " status, model_version) VALUES (1, %s, 1, 0.91, 'ELIGIBLE', 'm'),"
                            " (2, %s, 2, 0.80, 'ELIGIBLE', 'm'),"
                            " (3, %s, 3, 0.60, 'LIKELY', 'm'), (4, %s, 4, 0.55, 'LIKELY', 'm'),"
                            " (5, %s, 5, 0.95, 'INELIGIBLE', 'm'), (6, %s, 6, 0.52, 'LIKELY', 'm')", *[CIT] * 6)
        wait_for(lambda: hints(dep) == [(1, 1, "HIGH"), (2, 2, "HIGH"), (3, 3, "MEDIUM"), (4, 4, "MEDIUM"),
                                        (6, 5, "MEDIUM")], what="the first top 5")
        q(dep, "warehouse", "UPDATE eligibility_predictions SET status = 'INELIGIBLE' WHERE prediction_id = 1")
        q(dep, "warehouse", "DELETE FROM eligibility_predictions WHERE prediction_id = 3")
        wait_for(lambda: hints(dep) == [(2, 1, "HIGH"), (4, 2, "MEDIUM"), (6, 3, "MEDIUM")], what="the recompute")
    dump = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM eligibility_hints t")[0][0]
    assert "0.80" not in dump and "0.55" not in dump  # the raw score never leaves


def test_f3_partition_waits_for_a_scheme_the_portal_does_not_have_yet(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name) VALUES (%s, '1', 'A')", CIT)
    q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type, status)"
                        " SELECT i, 'S' || i, 'n', 'd', 'c', 'CASH', 'ACTIVE' FROM generate_series(1, 7) i")
    with running(cdc_config(dep), "warehouse", ["F3"]):
        q(dep, "warehouse", "INSERT INTO eligibility_predictions (prediction_id, citizen_id, scheme_id, score, status,"
                            " model_version) VALUES (1, %s, 7, 0.9, 'ELIGIBLE', 'm'), (2, %s, 1, 0.8, 'ELIGIBLE', 'm')",
          CIT, CIT)  # scheme 7 is not published in the portal yet: the hint's foreign key fails
        wait_for(lambda: q(dep, "citizen", "SELECT row_key, status FROM civicsync.dead_letters")
                 == [({"citizen_id": CIT}, "pending")], what="the citizen's partition to wait")
        q(dep, "warehouse", "UPDATE eligibility_predictions SET score = 0.85 WHERE prediction_id = 2")  # waits too
        q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (7, 'S7', 'n', 'c',"
                          " 'OPEN')")  # F1 publishes it
        wait_for(lambda: hints(dep) == [(7, 1, "HIGH"), (1, 2, "HIGH")], timeout=20, what="the retried partition")
    assert q(dep, "citizen", "SELECT status FROM civicsync.dead_letters") == [("replayed",)]
