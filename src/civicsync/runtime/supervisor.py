"""Supervise the CDC workers: one thread per source connection, restarted with backoff on a crash.

A worker that stops because the service is stopping has flushed, committed and acknowledged its
position (see :meth:`CdcWorker.run`). A worker that crashes has committed nothing half-way (one
target transaction per batch), so restarting it resumes from the stored position: no loss, no
duplicates. Restarts are counted in the state, the log and ``civicsync_worker_restarts_total``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import psycopg

from civicsync import metrics
from civicsync.capture.replication import ReplicationBrokenError
from civicsync.config import LoadedConfig
from civicsync.config.service import Supervisor as SupervisorSettings
from civicsync.db.errors import describe
from civicsync.runtime.cdc import CdcWorker
from civicsync.runtime.state import ServiceState, WorkerState
from civicsync.status import cdc_sources

log = logging.getLogger(__name__)

HEALTHY_AFTER = 60.0
"""A worker that streamed this long before crashing restarts after the initial delay again."""


class Supervisor:
    """Runs and restarts one :class:`CdcWorker` per source connection of the selected flows."""

    def __init__(self, config: LoadedConfig, state: ServiceState, settings: SupervisorSettings, *,
                 flows: list[str] | None = None, stop: threading.Event | None = None) -> None:
        self.config = config
        self.state = state
        self.settings = settings
        self.flows = flows
        self.stop_event = stop or threading.Event()
        model = config.model
        # One carrier per flow: with a kafka: section the Kafka-carried flows run only on Kafka (civicsync
        # capture + apply --group). Naming one here is refused; a hybrid one named keeps its batch path.
        model.refuse_kafka_carried(flows, keep_batches=True)
        self.sources = cdc_sources(config, flows)
        self.workers: dict[str, CdcWorker] = {}
        self._threads: list[threading.Thread] = []
        carried = model.kafka_flows(flows)
        if carried and not self.sources:
            log.info("no native CDC worker: every event-path flow (%s) is carried by Kafka (civicsync capture + "
                     "apply --group)", ", ".join(carried))
        elif carried:
            log.info("flows %s are carried by Kafka, not by the native CDC workers", ", ".join(carried))
        for source in self.sources:
            names = model.native_flows(source, flows)
            state.workers[source] = WorkerState(name=source, flows=names)
            for name in names:
                metrics.FLOW_UP.labels(name, model.flows[name].kind).set(0)

    def start(self) -> None:
        """Start one supervising thread per source."""
        for source in self.sources:
            thread = threading.Thread(target=self._supervise, args=(source,), name=f"cdc-{source}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask every worker to stop (they flush, commit and acknowledge), and wait for them."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for thread in self._threads:
            if thread.is_alive():
                log.error("CDC worker %s did not stop within %.0fs", thread.name, timeout)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def refresh(self) -> None:
        """Copy live worker figures (events, lag) into the state and the metrics."""
        now = datetime.now(UTC)
        for source, worker in list(self.workers.items()):
            waiting = worker.stats.waiting_since
            lag = max(0.0, (now - waiting).total_seconds()) if waiting else 0.0
            self.state.update_worker(source, events=worker.stats.events, lag_seconds=round(lag, 3))
            self.state.set_stopped_flows(worker.flows, worker.flow_stops.reasons())
            for flow in worker.flows:
                metrics.REPLICATION_LAG_SECONDS.labels(flow).set(lag)
            self._mark_stall(source, worker)

    def _mark_stall(self, source: str, worker: CdcWorker) -> None:
        # A worker retrying its target or reconnecting to its source is alive but not doing its job:
        # the flow is down for alerting (civicsync_flow_up 0) until it applies again.
        phase = self.state.workers[source].phase
        reason = worker.stalled_reason()
        if reason and phase == "running":
            self.state.update_worker(source, phase="stalled", last_error=reason)
            self._set_up(source, False)
            log.warning("CDC worker %s stalled: %s", source, reason)
        elif not reason and phase == "stalled":
            self.state.update_worker(source, phase="running")
            self._set_up(source, True)
            log.info("CDC worker %s applying again", source)

    # ------------------------------------------------------------------ one source

    def _supervise(self, source: str) -> None:
        delay = self.settings.restart_initial_delay
        metrics.REPLICATION_BROKEN.labels(source).set(0)
        while not self.stop_event.is_set():
            started = time.monotonic()
            error = self._run_once(source)
            if self.stop_event.is_set():
                break
            if isinstance(error, ReplicationBrokenError):
                # Restarting would fail the same way (and could hide lost changes): stop this worker,
                # say why, and let an operator act (the runbook of CivicsyncReplicationBroken).
                self.state.update_worker(source, phase="failed", last_error=str(error))
                metrics.REPLICATION_BROKEN.labels(source).set(1)
                log.error("CDC worker %s stopped for good: %s", source, error)
                return
            if time.monotonic() - started > HEALTHY_AFTER:
                delay = self.settings.restart_initial_delay
            ws = self.state.workers[source]
            self.state.update_worker(source, phase="restarting", restarts=ws.restarts + 1, last_error=error)
            metrics.WORKER_RESTARTS.labels(source).inc()
            log.error("CDC worker %s stopped: %s; restarting in %.1fs (restart #%d)",
                      source, error, delay, ws.restarts)
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.settings.restart_max_delay)
        self.state.update_worker(source, phase="stopped")

    def _run_once(self, source: str) -> str | ReplicationBrokenError:
        """Run one worker until it stops; returns why it stopped if that was not a requested stop (the
        error itself when the replication stream broke for good)."""
        self.state.update_worker(source, phase="starting")
        done = threading.Event()
        try:
            worker = CdcWorker(self.config, source, self.flows, stop=self.stop_event)
            self.workers[source] = worker
            watcher = threading.Thread(target=self._mark_running, args=(source, worker, done), daemon=True)
            watcher.start()
            worker.run()
        except ReplicationBrokenError as exc:
            return exc
        except Exception as exc:  # any crash: the supervisor's job is to restart it
            log.debug("CDC worker %s crashed", source, exc_info=True)
            return f"{type(exc).__name__}: {describe(exc) if isinstance(exc, psycopg.Error) else exc}"
        finally:
            done.set()
            self._set_up(source, False)
        return "" if self.stop_event.is_set() else "the worker returned without being asked to stop"

    def _mark_running(self, source: str, worker: CdcWorker, done: threading.Event) -> None:
        while not done.is_set():
            if worker.ready.wait(0.2) and not done.is_set():
                self.state.update_worker(source, phase="running")
                self._set_up(source, True)
                log.info("CDC worker %s streaming (%s)", source, ", ".join(worker.flows))
                return

    def _set_up(self, source: str, up: bool) -> None:
        model = self.config.model
        if not up and self.stop_event.is_set():
            self.state.update_worker(source, phase="stopping")
        for flow in self.state.workers[source].flows:
            stopped = flow in self.state.stopped_flows  # by a schema change: down though its worker runs
            metrics.FLOW_UP.labels(flow, model.flows[flow].kind).set(1 if up and not stopped else 0)
