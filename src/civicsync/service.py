"""`civicsync run`: the CDC workers, the batch scheduler and the HTTP API as one supervised service.

Start order: the API (so /health answers and /ready can say what is still starting), the CDC
workers, the scheduler (which may catch up a missed run at once), a sampler that refreshes the
database-derived gauges, and with a ``kafka:`` section a sampler of the consumer groups' lag.
Stop order (SIGTERM/SIGINT): stop intake (the scheduler starts no new
run and the API closes its listener after in-flight requests), let a running batch run finish,
stop the workers (each flushes, commits and acknowledges its position), exit 0.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from civicsync import __version__, metrics
from civicsync.config import LoadedConfig
from civicsync.errors import CivicsyncError
from civicsync.reconcile import latest_results
from civicsync.runtime.scheduler import BatchScheduler
from civicsync.runtime.state import ServiceState
from civicsync.runtime.supervisor import Supervisor
from civicsync.status import flow_status

if TYPE_CHECKING:
    from civicsync.api.server import ApiServer
    from civicsync.kafka.lag import LagMonitor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    """What to run; ``None`` host/port take the config's ``service.api`` values."""

    host: str | None = None
    port: int | None = None
    flows: list[str] | None = None
    api: bool = True
    workers: bool = True
    scheduler: bool = True


class Service:
    """One process running everything the config declares."""

    def __init__(self, config: LoadedConfig, options: ServiceOptions | None = None) -> None:
        self.config = config
        self.options = options or ServiceOptions()
        self.settings = config.model.service
        self.state = ServiceState()
        self.stopped = threading.Event()
        self._stop_sampler = threading.Event()
        self.supervisor = Supervisor(config, self.state, self.settings.supervisor, flows=self.options.flows) \
            if self.options.workers else None
        self.scheduler = BatchScheduler(config, self.state, self.settings.scheduler, flows=self.options.flows) \
            if self.options.scheduler and self.settings.scheduler.enabled else None
        self.api: ApiServer | None = None
        self._sampler: threading.Thread | None = None
        self.kafka_lag: LagMonitor | None = None
        self._workers_started = False
        metrics.BUILD.info({"version": __version__, "config": str(config.path)})
        metrics.declare_flows(config.model.flows)

    @property
    def url(self) -> str | None:
        """Base URL of the HTTP API once started."""
        if self.api is None:
            return None
        return f"http://{self.options.host or self.settings.api.host}:{self.api.port}"

    @property
    def serves_api(self) -> bool:
        """Will :meth:`start` serve the HTTP API (asked for, and the config has one)?"""
        return self.options.api and self.settings.api.enabled

    def start_workers(self) -> None:
        """Start the supervised CDC workers now (safe to call before :meth:`start`, which then leaves
        them running): a caller can let their initial snapshots finish before the first batch runs."""
        if self.supervisor is not None and not self._workers_started:
            self._workers_started = True
            self.supervisor.start()

    def start(self) -> None:
        """Start the API, the workers, the scheduler and the sampler."""
        if self.serves_api:
            from civicsync.api.app import create_app
            from civicsync.api.server import ApiServer

            host = self.options.host or self.settings.api.host
            port = self.settings.api.port if self.options.port is None else self.options.port
            self.api = ApiServer(create_app(self.config, self.state), host, port).start()
            log.info("API listening on %s", self.url)
        self.start_workers()
        rows = self._sample()
        if self.scheduler is not None:
            last_success = {r["flow"]: r.get("last_success_at") for r in rows}
            self.scheduler.start(last_success)
        self._sampler = threading.Thread(target=self._sample_loop, name="status-sampler", daemon=True)
        self._sampler.start()
        self._start_lag_monitor()

    def _start_lag_monitor(self) -> None:
        if self.config.model.kafka is None:
            return
        from civicsync.kafka.capture import group_flows
        from civicsync.kafka.lag import LagMonitor

        if group_flows(self.config, None):
            state = self.state
            # The state keeps the last sample for the status API and page; the monitor sets the gauges.
            self.kafka_lag = LagMonitor(self.config, on_sample=lambda sample: setattr(state, "kafka_lag", sample))
            self.kafka_lag.start()

    def stop(self) -> None:
        """Stop intake, finish what is running, commit positions; safe to call twice."""
        if self.stopped.is_set():
            return
        self.state.stopping = True
        log.info("stopping: no new batch runs, API closing, workers flushing")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.api is not None:
            self.api.stop()
        self._stop_sampler.set()
        if self.kafka_lag is not None:
            self.kafka_lag.stop()
        self.stopped.set()
        log.info("stopped cleanly")

    def _sample(self) -> list[dict[str, Any]]:
        if self.supervisor is not None:
            self.supervisor.refresh()
        try:
            rows = flow_status(self.config)
        except CivicsyncError as exc:
            log.warning("status sample failed: %s", exc)
            return []
        metrics.observe_status(rows)
        try:
            metrics.observe_reconciliations(latest_results(self.config))
        except CivicsyncError as exc:
            log.warning("reconciliation results not read: %s", exc)
        return rows

    def _sample_loop(self) -> None:
        # Live worker figures every second (cheap); database-derived gauges every status interval.
        interval = self.settings.supervisor.status_interval_seconds
        next_sample = time.monotonic() + interval
        while not self._stop_sampler.wait(min(interval, 1.0)):
            if self.supervisor is not None:
                self.supervisor.refresh()
            if time.monotonic() >= next_sample:
                self._sample()
                next_sample = time.monotonic() + interval
