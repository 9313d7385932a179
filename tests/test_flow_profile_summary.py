"""F8 profile summary, hybrid: events within seconds, and an hourly path that finds, repairs and
records what the event path missed — on real PostgreSQL with real replication."""

from __future__ import annotations

from typing import Any

from civicsync.config.service import Scheduler as SchedulerSettings
from civicsync.provision.databases import init_databases
from civicsync.runtime.scheduler import BatchScheduler
from civicsync.runtime.state import ServiceState
from fix_cdc import cdc_config, cleanup, running, wait_for
from fix_db import Deployment, q

CIT = "00000000-0000-4000-8000-0000000000f8"
OTHER = "00000000-0000-4000-8000-0000000000f9"


def _citizens(dep: Deployment) -> None:
    for cid in (CIT, OTHER):
        q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'Asha')", cid)


def _summary(dep: Deployment, cid: str, total: str, enrolled: int = 1) -> None:
    q(dep, "warehouse", "INSERT INTO profile_summaries (citizen_id, schemes_enrolled, total_benefits_received,"
                        " active_applications, last_benefit_date, updated_at) VALUES (%s, %s, %s, 0, '2026-10-01',"
                        " clock_timestamp()) ON CONFLICT (citizen_id) DO UPDATE SET"
                        " total_benefits_received = excluded.total_benefits_received,"
                        " schemes_enrolled = excluded.schemes_enrolled, updated_at = excluded.updated_at",
      cid, enrolled, total)


def _band(dep: Deployment, cid: str) -> Any:
    rows = q(dep, "citizen", "SELECT benefits_band FROM profile_summary WHERE citizen_id = %s", cid)
    return rows[0][0] if rows else None


def test_f8_events_arrive_banded_and_the_raw_amount_never_leaves(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    _citizens(dep)
    config = cdc_config(dep)
    with running(config, "warehouse", ["F8"]):
        _summary(dep, CIT, "12500.00")
        wait_for(lambda: _band(dep, CIT) == "10k-50k", what="the summary")
        _summary(dep, CIT, "120000.00", 3)
        wait_for(lambda: _band(dep, CIT) == "1L+", what="the update")
    assert q(dep, "citizen", "SELECT schemes_enrolled FROM profile_summary WHERE citizen_id = %s", CIT) == [(3,)]
    dump = q(dep, "citizen", "SELECT string_agg(t::text, ' ') FROM profile_summary t")[0][0]
    assert "120000" not in dump and "12500" not in dump


def test_f8_a_change_the_event_path_missed_is_repaired_hourly_and_recorded(fresh_deployment: Deployment) -> None:
    """The worker is stopped, a change is made, the slot is dropped and recreated without a snapshot
    (as after an outage longer than WAL retention): the event path never sees that change. The
    hourly path finds it, repairs it through the flow's rules, and its reconciliation record says so."""
    dep = fresh_deployment
    _citizens(dep)

    def no_snapshot(raw: dict[str, Any]) -> None:
        raw["connections"]["warehouse"]["capture"]["snapshot"] = "never"

    config = cdc_config(dep, no_snapshot)
    with running(config, "warehouse", ["F8"]):
        _summary(dep, CIT, "5000.00")
        _summary(dep, OTHER, "7000.00")
        wait_for(lambda: _band(dep, CIT) == "0-10k" and _band(dep, OTHER) == "0-10k", what="both summaries")
    # `running` dropped the slot (and publication) on exit: what happens now is never streamed.
    _summary(dep, CIT, "75000.00", 2)
    init_databases(config)  # `db init` again: the publication and grants (the slot is made by the worker)
    with running(config, "warehouse", ["F8"]):  # a new slot, from now on
        _summary(dep, OTHER, "60000.00")
        wait_for(lambda: _band(dep, OTHER) == "50k-1L", what="a later change still streams")
        assert _band(dep, CIT) == "0-10k"  # missed

        state = ServiceState()
        sched = BatchScheduler(config, state, SchedulerSettings(), flows=["F8"])
        result = sched.run_flow("profile_summary")
    cleanup(config, "warehouse")
    assert result is not None and result["ok"], result
    assert _band(dep, CIT) == "50k-1L"  # repaired through the flow's banding rule
    record = result["reconcile"]
    assert (record["missing"], record["extra"], record["different"]) == (0, 0, 1), record
    assert record["repaired"] == 1, record
    with dep.connect("citizen") as conn:
        found = conn.execute(
            "SELECT d.class, d.row_key, d.repaired FROM civicsync.reconcile_differences d"
            " JOIN civicsync.reconcile_runs r USING (run_id) WHERE r.flow = 'profile_summary'").fetchall()
    assert found == [("different", {"citizen_id": CIT}, True)], found
