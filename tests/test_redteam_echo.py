"""Red team (issue 9 items 9-10, SPEC §4 echo rule): F4's effects reach the warehouse through F6 exactly
once also when F4's write is a dead-letter *replay* (the decision arrived before the application was in
the portal), and a second decision for the same stage does not double an event row."""

from __future__ import annotations

import time

from fix_cdc import CIT, cdc_config, decision, running, wait_for
from fix_db import Deployment, q


def _events(dep: Deployment) -> list[tuple[object, ...]]:
    return q(dep, "warehouse", "SELECT event_type FROM application_events WHERE application_id = 7"
                               " ORDER BY occurred_at, event_id")


def test_a_replayed_decision_reaches_the_warehouse_through_f6_once(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    config = cdc_config(dep)
    with running(config, "citizen", ["F6"]), running(config, "warehouse", ["F4"]):
        decision(dep, 1, "UNDER_REVIEW")  # application 7 is not in the portal yet: F4 dead-letters it
        wait_for(lambda: q(dep, "citizen", "SELECT count(*) FROM civicsync.dead_letters WHERE status = 'pending'")
                 == [(1,)], what="F4 to wait for the application")
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (7, %s, 1, 'SUBMITTED')", CIT)
        # The retry (replay origin) writes UNDER_REVIEW into the portal; F6 must carry it on.
        wait_for(lambda: q(dep, "citizen", "SELECT status FROM applications") == [("UNDER_REVIEW",)], timeout=30,
                 what="the replayed decision in the portal")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("UNDER_REVIEW",)],
                 timeout=15, what="the replayed decision in the warehouse through F6")
        decision(dep, 2, "PEND_DOC")
        decision(dep, 3, "APPR")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("APPROVED",)],
                 timeout=15, what="the approval through F6")
        time.sleep(1.0)
        portal = q(dep, "citizen", "SELECT xmin::text, status FROM applications")
        time.sleep(1.0)
        assert q(dep, "citizen", "SELECT xmin::text, status FROM applications") == portal  # no ping-pong
    events = [r[0] for r in _events(dep)]
    # One row per transition the portal's row went through (PEND_DOC may or may not be seen in between).
    assert events in (["SUBMITTED", "UNDER_REVIEW", "APPROVED"],
                      ["SUBMITTED", "UNDER_REVIEW", "DOCUMENTS_REQUIRED", "APPROVED"]), events
