"""CLI commands for running on Kafka: `capture SOURCE`, `apply --group G`, `kafka topics [--apply]`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer

from civicsync.cli.common import ConfigOpt, JsonOpt, VerboseOpt, load, out, setup, user_errors
from civicsync.config import LoadedConfig

kafka_app = typer.Typer(help="Kafka: topics of the flows carried on Kafka.", no_args_is_help=True)
FlowsOpt = Annotated[list[str] | None, typer.Option("--flow", "-f", help="Only these flows (repeatable).")]


def register(app: typer.Typer) -> None:
    """Add `capture`, `apply` and `kafka` to the CLI."""
    app.add_typer(kafka_app, name="kafka")
    app.command("capture")(capture)
    app.command("apply")(apply)


def _run_until_signalled(verbose: bool, config: ConfigOpt,
                         make: Callable[[LoadedConfig, threading.Event], Any]) -> None:
    """Build a runner from the loaded config and run it until SIGINT/SIGTERM (clean stop, exit 0)."""
    setup(verbose)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with user_errors():
        make(load(config), stop).run()


def capture(
    source: Annotated[str, typer.Argument(help="Source connection (e.g. citizen).")],
    flows: FlowsOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Publish the source's CDC flows to Kafka (after each flow's transform) until SIGINT/SIGTERM."""
    from civicsync.kafka.capture import KafkaCapture

    _run_until_signalled(verbose, config, lambda loaded, stop: KafkaCapture(loaded, source, stop=stop, flows=flows))


def apply(
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group (all workers of it share the "
                                                              "partitions).")],
    flows: FlowsOpt = None,
    start: Annotated[str | None, typer.Option("--from", help="Re-apply from 'earliest' or an ISO timestamp.")] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Apply the flows' Kafka topics to their target as one worker of consumer group GROUP."""
    from civicsync.kafka.consume import GroupApplier

    _run_until_signalled(verbose, config,
                         lambda loaded, stop: GroupApplier(loaded, group, flows, start=start, stop=stop))


@kafka_app.command("topics")
def topics(
    do_apply: Annotated[bool, typer.Option("--apply", help="Make the changes (default: only list them).")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List (or with --apply make) the topic changes that bring the cluster to the config's declaration."""
    import json

    from civicsync.kafka.capture import kafka_settings
    from civicsync.kafka.declared import declared_topics
    from civicsync.kafka.topics import admin_client, ensure_topics

    with user_errors():
        loaded = load(config)
        admin = admin_client(kafka_settings(loaded).bootstrap())
        changes = ensure_topics(admin, declared_topics(loaded), apply=do_apply)
    if as_json:
        out.print_json(json.dumps({"applied": do_apply, "changes": [str(c) for c in changes]}))
        return
    if not changes:
        out.print("topics match the config")
    for change in changes:
        out.print(("done: " if do_apply else "to do: ") + str(change), highlight=False)


@kafka_app.command("lag")
def lag(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Consumer lag per group and partition (records not applied, age of the oldest), from the offsets
    stored in the targets and the partitions' high watermarks."""
    import json

    from rich.table import Table

    from civicsync.kafka.lag import consumer_lag

    with user_errors():
        rows = consumer_lag(load(config))
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in rows]))
        return
    table = Table("group", "topic", "partition", "applied", "high watermark", "lag", "lag s", "owner")
    for r in rows:
        table.add_row(r.group, r.topic, str(r.partition), str(r.applied_offset), str(r.high_watermark),
                      str(r.lag_records), f"{r.lag_seconds:.1f}", r.owner)
    out.print(table)
