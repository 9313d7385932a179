"""`civicsync run`: everything the config declares, as one service, until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from civicsync.cli.common import ConfigOpt, FlowsOpt, VerboseOpt, err, fail, flow_name, load, setup, user_errors


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(config: ConfigOpt = None, verbose: VerboseOpt = False, flows: FlowsOpt = None,
        host: Annotated[str | None, typer.Option(help="API address (default: service.api.host).")] = None,
        port: Annotated[int | None, typer.Option(help="API port, 0 for any free one (default: service.api.port).")]
        = None,
        no_api: Annotated[bool, typer.Option("--no-api", help="Do not serve the HTTP API.")] = False,
        no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Do not run batch flows.")] = False,
        no_workers: Annotated[bool, typer.Option("--no-workers", help="Do not run CDC workers.")] = False) -> None:
    """Run the CDC workers, the batch scheduler and the HTTP API together; SIGTERM stops cleanly (exit 0)."""
    from civicsync.service import Service, ServiceOptions

    setup(verbose)
    stop = threading.Event()
    # Before anything else: a SIGTERM during start-up must still mean a clean stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with user_errors():
        loaded = load(config)
        for flow in flows or []:
            flow_name(loaded, flow)  # an unknown flow is bad input (exit 2), not a service with nothing to do
        service = Service(loaded, ServiceOptions(host=host, port=port, flows=flows, api=not no_api,
                                                        workers=not no_workers, scheduler=not no_scheduler))
        if not (service.supervisor or service.scheduler or service.serves_api):
            fail("nothing to run", 2)
        service.start()
        parts = []
        if service.url:
            parts.append(f"API {service.url} (status page /, metrics /metrics)")
        if service.supervisor is not None:
            on_kafka = loaded.model.kafka_flows(flows)
            parts.append(f"CDC {', '.join(service.supervisor.sources) or 'none'}"
                         + (f" ({', '.join(on_kafka)} on Kafka)" if on_kafka else ""))
        if service.scheduler is not None:
            parts.append(f"scheduler: {', '.join(service.scheduler.flows) or 'no scheduled flows'}")
        err.print("civicsync running — " + "; ".join(parts) + ". Ctrl-C / SIGTERM to stop.", highlight=False)
        try:
            stop.wait()
        finally:
            service.stop()
    err.print("stopped cleanly", highlight=False)
