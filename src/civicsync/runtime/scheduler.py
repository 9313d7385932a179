"""The embedded scheduler: runs batch flows on their cron schedules (UTC) with APScheduler 3.

- Never two runs of one flow at once: ``max_instances=1`` in this process, and the flow's advisory
  lock in the target database across processes (a second run fails fast with FlowBusyError).
- Missed runs: the job store lives in memory, so APScheduler alone cannot know what was missed
  while the service was down. At start the scheduler compares each flow's last successful run
  (``civicsync.runs``) with its most recent scheduled time; a run missed by less than
  ``misfire_grace_seconds`` runs once now (several missed runs coalesce into one), an older miss
  is logged and left to the BatchRunMissed alert and the operator.
- Each run is :func:`civicsync.jobs.flow_job.run_flow_job` (the batch run, and reconciliation where
  the flow asks for it) — the same function the Airflow DAGs call.
- Shutdown stops starting new runs and waits for a running one: a run is one target transaction,
  so it completes or (if the process is killed) rolls back; it is never half-applied.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from civicsync import metrics
from civicsync.config import LoadedConfig
from civicsync.config.service import Scheduler as SchedulerSettings
from civicsync.errors import CivicsyncError
from civicsync.jobs.flow_job import run_flow_job
from civicsync.runtime.state import ScheduledJob, ServiceState

log = logging.getLogger(__name__)


def cron_trigger(schedule: str) -> CronTrigger:
    """The trigger of a five-field cron expression, in UTC."""
    return CronTrigger.from_crontab(schedule, timezone=UTC)


def schedule_interval(schedule: str, *, samples: int = 60, now: datetime | None = None) -> float:
    """The longest gap (seconds) between consecutive fire times of ``schedule`` over the next runs."""
    trigger = cron_trigger(schedule)
    t = now or datetime.now(UTC)
    previous: datetime | None = None
    longest = 0.0
    for _ in range(samples):
        nxt = trigger.get_next_fire_time(previous, t)
        if nxt is None:
            break
        if previous is not None:
            longest = max(longest, (nxt - previous).total_seconds())
        previous, t = nxt, nxt + timedelta(microseconds=1)
    return longest


def previous_fire_time(schedule: str, now: datetime) -> datetime | None:
    """The most recent time ``schedule`` fired at or before ``now``."""
    trigger = cron_trigger(schedule)
    t = now - timedelta(seconds=schedule_interval(schedule, now=now) + 60)
    last: datetime | None = None
    while True:
        nxt = trigger.get_next_fire_time(last, t)
        if nxt is None or nxt > now:
            return last
        last, t = nxt, nxt + timedelta(microseconds=1)


class BatchScheduler:
    """Runs the batch path of every flow that has a ``schedule`` (kinds batch, aggregate, hybrid)."""

    def __init__(self, config: LoadedConfig, state: ServiceState, settings: SchedulerSettings, *,
                 flows: list[str] | None = None) -> None:
        self.config = config
        self.state = state
        self.settings = settings
        self.flows = [n for n, f in config.model.flows.items()
                      if f.batches and f.schedule and (flows is None or n in flows or f.id in flows)]
        self._scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": settings.misfire_grace_seconds})
        self._locks = {name: threading.Lock() for name in self.flows}
        for name in self.flows:
            schedule = config.model.flows[name].schedule
            assert schedule is not None
            state.jobs[name] = ScheduledJob(flow=name, schedule=schedule)

    def start(self, last_success: dict[str, datetime | None] | None = None) -> None:
        """Schedule every flow, then catch up runs missed while the service was down."""
        model = self.config.model
        for name in self.flows:
            schedule = model.flows[name].schedule
            assert schedule is not None
            self._scheduler.add_job(self.run_flow, cron_trigger(schedule), args=[name], id=name, name=name)
            metrics.BATCH_INTERVAL.labels(name).set(schedule_interval(schedule))
            if not model.flows[name].streams:  # a hybrid flow is up when its worker streams (the supervisor says)
                metrics.FLOW_UP.labels(name, model.flows[name].kind).set(1)
        self._schedule_pii_audit()
        self._scheduler.start()
        self._refresh_next_runs()
        for name in self.missed(last_success or {}):
            self.run_now(name)

    def _schedule_pii_audit(self) -> None:
        from civicsync.audit.job import JOB_ID, run_pii_audit_job  # masking validation (issue 10.6)

        if self.config.model.audit.pii.schedule is not None:
            self._scheduler.add_job(run_pii_audit_job, cron_trigger(self.config.model.audit.pii.schedule),
                                    args=[self.config], id=JOB_ID, name=JOB_ID)

    def missed(self, last_success: dict[str, datetime | None], now: datetime | None = None) -> list[str]:
        """Flows whose latest scheduled run has no successful run after it, within the grace period."""
        now = now or datetime.now(UTC)
        grace = timedelta(seconds=self.settings.misfire_grace_seconds)
        due: list[str] = []
        for name in self.flows:
            schedule = self.config.model.flows[name].schedule
            assert schedule is not None
            fired = previous_fire_time(schedule, now)
            done = last_success.get(name)
            if fired is None or (done is not None and done >= fired):
                continue
            if now - fired <= grace:
                log.warning("flow %s: the run due at %s did not happen (service down?); running it now",
                            name, fired.isoformat())
                due.append(name)
            else:
                log.warning("flow %s: the run due at %s was missed by more than the %ss grace; not catching up "
                            "(run `civicsync batch run %s` if it is wanted)", name, fired.isoformat(),
                            self.settings.misfire_grace_seconds, name)
        return due

    def run_now(self, name: str) -> None:
        """Run a flow as soon as possible, on the scheduler's threads (coalesced with a running one)."""
        self._scheduler.add_job(self.run_flow, args=[name], id=f"{name}:now:{datetime.now(UTC).timestamp()}",
                                name=f"{name} (now)", misfire_grace_time=None)

    def shutdown(self, wait: bool = True) -> None:
        """Start no new run; with ``wait``, let a running one finish (it commits or rolls back whole)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        for name in self.flows:
            if not self.config.model.flows[name].streams:
                metrics.FLOW_UP.labels(name, self.config.model.flows[name].kind).set(0)

    def run_flow(self, name: str) -> dict[str, Any] | None:
        """One scheduled run of ``name``: the batch job, then reconciliation if the flow asks for it."""
        lock = self._locks[name]
        if not lock.acquire(blocking=False):
            log.warning("flow %s: a run is still going; this one is skipped", name)
            return None
        try:
            self.state.update_job(name, running=True)
            result = run_flow_job(self.config, name)
            self.state.update_job(name, last_result=result)
            return result
        except CivicsyncError as exc:
            log.error("flow %s: scheduled run failed: %s", name, exc)
            return self._failed(name, str(exc))
        except Exception as exc:  # a bug must not take the scheduler down; it is logged with its traceback
            log.exception("flow %s: scheduled run crashed", name)
            return self._failed(name, f"{type(exc).__name__}: {exc}")
        finally:
            self.state.update_job(name, running=False)
            self._refresh_next_runs()
            lock.release()

    def _failed(self, name: str, error: str) -> dict[str, Any]:
        result = {"flow": name, "id": self.config.model.flows[name].id, "ok": False, "error": error}
        self.state.update_job(name, last_result=result)
        return result

    def _refresh_next_runs(self) -> None:
        # From the triggers, not the scheduler: asking the scheduler from a job thread deadlocks
        # while shutdown(wait=True) holds the job store lock and waits for that very thread.
        now = datetime.now(UTC)
        for name in self.flows:
            schedule = self.config.model.flows[name].schedule
            assert schedule is not None
            self.state.update_job(name, next_run=cron_trigger(schedule).get_next_fire_time(None, now))
