"""The echo rule (issue 9 item 9, SPEC §4): a change never goes back to the table it was derived
from, and a change civicsync derived into one table flows on where another flow carries that table."""

from __future__ import annotations

import copy
import time
from typing import Any

from civicsync.config import LoadedConfig
from civicsync.db.origin import echo_origins, origin_for
from civicsync.reconcile.engine import reconcile_flow
from fix_cdc import CIT, cdc_config, decision, running, wait_for
from fix_db import Deployment, q


def _origin(config: LoadedConfig, source: str) -> str:
    return origin_for(config, f"cdc_{config.model.connections[source].capture.slot}")


def test_the_rule_is_read_from_the_config(fresh_deployment: Deployment) -> None:
    config = cdc_config(fresh_deployment)
    citizen, warehouse = _origin(config, "citizen"), _origin(config, "warehouse")
    # F6 carries what F4 wrote (derived from decisions, not from the warehouse's applications).
    assert warehouse not in echo_origins(config, "application_submissions")
    # F5 never carries F2's batch writes back: F2 derived the portal's citizens from citizen_profiles.
    assert origin_for(config, "batch_profile_prefill") in echo_origins(config, "profile_updates")
    assert citizen not in echo_origins(config, "profile_updates")


def test_a_decision_reaches_the_warehouse_through_f6_exactly_once(fresh_deployment: Deployment) -> None:
    """F4 writes the portal's status (warehouse decisions → portal applications); F6 carries the
    portal's applications to the warehouse: each transition arrives there once, with one event row."""
    dep = fresh_deployment
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    config = cdc_config(dep)
    with running(config, "citizen", ["F6"]) as f6, running(config, "warehouse", ["F4"]) as f4:
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (7, %s, 1, 'SUBMITTED')", CIT)
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("SUBMITTED",)],
                 what="the submission")
        decision(dep, 1, "UNDER_REVIEW")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("UNDER_REVIEW",)],
                 what="F4's status, carried on by F6")
        decision(dep, 2, "APPR")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("APPROVED",)],
                 what="the approval")
        time.sleep(1.0)  # anything that would come twice has come by now
        assert q(dep, "warehouse", "SELECT event_type FROM application_events ORDER BY occurred_at") == [
            ("SUBMITTED",), ("UNDER_REVIEW",), ("APPROVED",)]
        assert q(dep, "citizen", "SELECT status FROM applications") == [("APPROVED",)]
        assert f4.worker.stats.events == 2 and f6.worker.stats.events == 3


def _registry_to_portal(raw: dict[str, Any]) -> None:
    """An F2-like flow on the event path: the registry's citizen_profiles → the portal's citizens."""
    raw["flows"]["registry_to_portal"] = {
        "id": "F92", "kind": "cdc",
        "source": {"connection": "warehouse", "table": "public.citizen_profiles"},
        "target": {"connection": "citizen", "table": "public.citizens"},
        "columns": {"citizen_id": "citizen_id", "full_name": "full_name", "phone": "phone",
                    "updated_at": "updated_at"},
        "cdc": {"write": "update_only", "on_missing_target": "skip", "deletes": "ignore"}}


def test_a_true_round_trip_in_cdc_never_ping_pongs(fresh_deployment: Deployment) -> None:
    """F5 (portal → registry) and an F2-like CDC flow (registry → portal): each edit makes one trip,
    and a registry-owned field written into the portal is not routed back as a change request."""
    dep = fresh_deployment
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, phone, updated_at)"
                        " VALUES (%s, '234567890123', 'Asha', '9876543210', now() - interval '1 day')", CIT)
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone, updated_at)"
                      " VALUES (%s, 'Asha', '9876543210', now() - interval '1 day')", CIT)
    config = cdc_config(dep, _registry_to_portal)
    with running(config, "citizen", ["F5"]) as f5, running(config, "warehouse", ["F92"]) as f92:
        q(dep, "citizen", "UPDATE citizens SET phone = '9000000009', updated_at = now()")  # a citizen's edit
        wait_for(lambda: q(dep, "warehouse", "SELECT phone FROM citizen_profiles") == [("9000000009",)],
                 what="the edit to reach the registry")
        wait_for(lambda: f92.worker.stats.skipped_own >= 1, what="F92 to skip F5's write")
        q(dep, "warehouse", "UPDATE citizen_profiles SET full_name = 'Asha K', updated_at = now()")  # registry
        wait_for(lambda: q(dep, "citizen", "SELECT full_name FROM citizens") == [("Asha K",)],
                 what="the registry's edit to reach the portal")
        wait_for(lambda: f5.worker.stats.skipped_own >= 1, what="F5 to skip F92's write")
        portal, registry = q(dep, "citizen", "SELECT xmin::text FROM citizens"), \
            q(dep, "warehouse", "SELECT xmin::text FROM citizen_profiles")
        time.sleep(1.5)
        assert q(dep, "citizen", "SELECT xmin::text FROM citizens") == portal
        assert q(dep, "warehouse", "SELECT xmin::text FROM citizen_profiles") == registry
        assert f5.worker.stats.events == 1 and f92.worker.stats.events == 1
    assert q(dep, "warehouse", "SELECT count(*) FROM profile_change_requests") == [(0,)]


# --------------------------------------------------------------------------- item 10: repair obeys the rule


def _registry_apps_to_portal(raw: dict[str, Any]) -> None:
    """A flow carrying the registry's applications back to the portal: the reverse of F6. It reads
    through a connection of its own (same database, own slot): an origin names a worker, and one
    worker writing the portal's applications for F4 and for F93 could not be told apart."""
    second = copy.deepcopy(raw["connections"]["warehouse"])
    second.pop("migrations", None)
    second["capture"] = {**second["capture"], "slot": second["capture"]["slot"] + "_b",
                         "publication": second["capture"]["publication"] + "_b"}
    # Read here (the warehouse connection only writes it, so the reference config derives its columns).
    second["tables"] = {"public.applications": {"key": ["application_id"], "columns": [
        "application_id", "citizen_ref", "scheme_id", "status", "submitted_at", "form_data", "updated_at"]}}
    raw["connections"]["registry_b"] = second
    raw["flows"]["registry_apps_to_portal"] = {
        "id": "F93", "kind": "cdc",
        "source": {"connection": "registry_b", "table": "public.applications"},
        "target": {"connection": "citizen", "table": "public.applications"},
        "columns": {"application_id": "application_id", "status": "status"},
        "cdc": {"write": "update_only", "on_missing_target": "skip", "deletes": "ignore"}}


def test_reconcile_repair_reports_and_writes_back_no_echo(fresh_deployment: Deployment) -> None:
    """After F4's decisions reached the registry through F6, `reconcile F6 --repair` finds nothing to
    do (no trail rows); a real repair of F6 writes with its own origin, which the reverse flow F93 does
    not carry back to the portal."""
    dep = fresh_deployment
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    config = cdc_config(dep, _registry_apps_to_portal)
    with running(config, "citizen", ["F6"]), running(config, "warehouse", ["F4"]), \
            running(config, "registry_b", ["F93"]) as wh:
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (7, %s, 1, 'SUBMITTED'), (8, %s, 1, 'SUBMITTED')", CIT, CIT)
        decision(dep, 1, "UNDER_REVIEW")
        wait_for(lambda: q(dep, "warehouse", "SELECT application_id, status FROM applications ORDER BY 1")
                 == [(7, "UNDER_REVIEW"), (8, "SUBMITTED")], what="F4's status through F6")
        events = q(dep, "warehouse", "SELECT * FROM application_events ORDER BY event_id")
        registry = q(dep, "warehouse", "SELECT xmin::text FROM applications ORDER BY application_id")
        result = reconcile_flow(config, "F6", repair=True).raise_for_error()
        assert result.found == 0 and result.repaired == 0, result.summary()
        assert q(dep, "warehouse", "SELECT xmin::text FROM applications ORDER BY application_id") == registry
        assert q(dep, "warehouse", "SELECT * FROM application_events ORDER BY event_id") == events
        # A real difference: the registry lost application 8. The repair restores it under its origin.
        skipped = wh.worker.stats.skipped_own
        q(dep, "warehouse", "DELETE FROM applications WHERE application_id = 8")
        portal = q(dep, "citizen", "SELECT xmin::text FROM applications WHERE application_id = 8")
        repaired = reconcile_flow(config, "F6", repair=True).raise_for_error()
        assert repaired.repaired == 1, repaired.summary()
        assert q(dep, "warehouse", "SELECT status FROM applications WHERE application_id = 8") == [("SUBMITTED",)]
        wait_for(lambda: wh.worker.stats.skipped_own > skipped, what="F93 to skip the repair's write")
        time.sleep(0.5)
        assert q(dep, "citizen", "SELECT xmin::text FROM applications WHERE application_id = 8") == portal
