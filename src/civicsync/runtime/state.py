"""What a running service knows that the databases don't: worker health and the schedule.

The supervisor and the scheduler write it; the HTTP API (``/ready``, the status API, the status
page) and the metrics read it. Reads take a snapshot under a lock, so readers never see a worker
half-updated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

WorkerPhase = Literal["starting", "running", "stalled", "restarting", "stopping", "stopped", "failed"]


@dataclass
class WorkerState:
    """One supervised CDC worker (one source connection and its flows)."""

    name: str
    flows: list[str]
    phase: WorkerPhase = "starting"
    restarts: int = 0
    last_error: str | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    events: int = 0
    lag_seconds: float = 0.0


@dataclass
class ScheduledJob:
    """One batch flow on the embedded scheduler."""

    flow: str
    schedule: str
    next_run: datetime | None = None
    running: bool = False
    last_result: dict[str, Any] | None = None


class ServiceState:
    """Shared, thread-safe view of the service's workers and scheduled jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_at = datetime.now(UTC)
        self.workers: dict[str, WorkerState] = {}
        self.jobs: dict[str, ScheduledJob] = {}
        self.stopping = False
        # Flows a schema change stopped (flow → why, naming the column and what to change, never a
        # value), while the rest of their worker goes on: copied from the workers by the supervisor.
        self.stopped_flows: dict[str, str] = {}
        # The last Kafka consumer-lag sample (kafka.lag.LagSample), set by the service's LagMonitor;
        # None without a kafka: section or before the first sample. One reference, swapped whole.
        self.kafka_lag: Any = None

    def update_worker(self, name: str, **changes: Any) -> None:
        """Change fields of a worker's state (``phase`` changes also reset ``since``)."""
        with self._lock:
            worker = self.workers[name]
            if "phase" in changes and changes["phase"] != worker.phase:
                worker.since = datetime.now(UTC)
            for key, value in changes.items():
                setattr(worker, key, value)

    def update_job(self, flow: str, **changes: Any) -> None:
        with self._lock:
            job = self.jobs[flow]
            for key, value in changes.items():
                setattr(job, key, value)

    def set_stopped_flows(self, flows: list[str], stopped: dict[str, str]) -> None:
        """Of ``flows`` (one worker's), those in ``stopped`` are stopped by a schema change, the others not."""
        with self._lock:
            for flow in flows:
                if flow in stopped:
                    self.stopped_flows[flow] = stopped[flow]
                else:
                    self.stopped_flows.pop(flow, None)

    def flows_running(self) -> dict[str, bool]:
        """Per event-path flow: is its worker streaming right now, and the flow not stopped?"""
        with self._lock:
            return {flow: w.phase == "running" and flow not in self.stopped_flows
                    for w in self.workers.values() for flow in w.flows}

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy: service start, workers, scheduled jobs."""
        with self._lock:
            return {
                "started_at": self.started_at.isoformat(),
                "stopping": self.stopping,
                "stopped_flows": dict(self.stopped_flows),
                "workers": [{"name": w.name, "flows": list(w.flows), "phase": w.phase, "restarts": w.restarts,
                             "last_error": w.last_error, "since": w.since.isoformat(), "events": w.events,
                             "lag_seconds": w.lag_seconds} for w in self.workers.values()],
                "jobs": [{"flow": j.flow, "schedule": j.schedule,
                          "next_run": j.next_run.isoformat() if j.next_run else None,
                          "running": j.running, "last_result": j.last_result} for j in self.jobs.values()],
            }
