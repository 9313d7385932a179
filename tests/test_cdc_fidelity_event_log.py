"""Issue 9 item 6, as a property: every source transition gives exactly one event-log row, whatever the
batching. Random insert/update/delete sequences of one application go through the F6 applier against
the real warehouse tables, one change per batch, all in one batch and split at random points; the
event rows must be the same each time and equal those of the rule stated in plain Python."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.db.connect import connect
from civicsync.events import ChangeEvent, SourceInfo
from fix_db import Deployment

APP = "7000009"
STATUSES = ["DRAFT", "SUBMITTED", "UNDER_REVIEW", "DOCUMENTS_REQUIRED", "APPROVED"]
# A step: a status (insert it if the row is absent, else update to it), or None (delete, if present).
STEPS = st.lists(st.one_of(st.none(), st.sampled_from(STATUSES)), min_size=1, max_size=8)


def _changes(applier: CdcFlowApplier, steps: list[str | None]) -> tuple[list[ChangeEvent], list[tuple[str, str]]]:
    """The change events of ``steps`` and the event rows the rule gives (status, occurred_at)."""
    events: list[ChangeEvent] = []
    expected: list[tuple[str, str]] = []
    present, logged = False, None  # the source row exists; the target's status (None: no target row)
    for i, status in enumerate(steps, start=1):
        at = f"2026-01-01 00:00:{i:02d}+00"
        info = SourceInfo("cz", "public", "applications", i, i, datetime.now(UTC))
        if status is None:
            if present:
                events.append(ChangeEvent("d", {"application_id": APP}, None, info, {"application_id": APP}))
                present, logged = False, None
            continue
        values = {"application_id": APP, "citizen_id": "00000000-0000-4000-8000-0000000000c1", "scheme_id": "1",
                  "status": status, "form_data": "{}", "updated_at": at}
        after = {c: values.get(c) for c in applier.transform.source_columns}
        events.append(ChangeEvent("u" if present else "c", None, after, info, {"application_id": APP}))
        present = True
        if status == "DRAFT":  # filtered out: the target row goes
            logged = None
        elif status != logged:
            expected.append((status, at))
            logged = status
    return events, expected


def _apply(dep: Deployment, applier: CdcFlowApplier, batches: list[list[ChangeEvent]]) -> list[tuple[str, str]]:
    with connect(dep.warehouse_dsn, purpose="test") as conn:
        conn.execute("DELETE FROM applications WHERE application_id = %s", (APP,))
        conn.execute("DELETE FROM application_events WHERE application_id = %s", (APP,))
        for batch in batches:
            outcome = FlowOutcome()
            applier.write(conn, applier.net_effect(batch, set(), outcome), outcome)
            assert outcome.dead_letters == []
        rows = conn.execute("SELECT event_type, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                            " || '+00' FROM application_events WHERE application_id = %s ORDER BY occurred_at",
                            (APP,)).fetchall()
        conn.rollback()
    return [(str(r[0]), str(r[1])) for r in rows]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, cuts=st.sets(st.integers(1, 7)))
def test_each_transition_is_logged_once_whatever_the_batching(deployment: Deployment, steps: list[Any],
                                                               cuts: set[int]) -> None:
    applier = CdcFlowApplier(deployment.config(), "application_submissions")
    events, expected = _changes(applier, steps)
    edges = [0, *sorted(c for c in cuts if c < len(events)), len(events)]
    assert _apply(deployment, applier, [[e] for e in events]) == expected
    assert _apply(deployment, applier, [events]) == expected
    assert _apply(deployment, applier, [events[a:b] for a, b in pairwise(edges)]) == expected
