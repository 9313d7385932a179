"""CLI commands for change data capture: `cdc run`, `dlq list|show|replay|discard`."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from civicsync.cli.common import ConfigOpt, FlowsOpt, JsonOpt, VerboseOpt, err, fail, load, out, setup, user_errors
from civicsync.config import LoadedConfig
from civicsync.db.connect import connect
from civicsync.status import cdc_sources

cdc_app = typer.Typer(help="Change data capture: real-time flows.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, inspect, replay, discard.", no_args_is_help=True)




def register(app: typer.Typer) -> None:
    app.add_typer(cdc_app, name="cdc")
    app.add_typer(dlq_app, name="dlq")


@cdc_app.command("run")
def cdc_run(flows: FlowsOpt = None, config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Run the CDC workers in the foreground until SIGINT/SIGTERM; then flush, commit and exit 0."""
    from civicsync.capture.replication import Stopped
    from civicsync.runtime.cdc import CdcWorker

    setup(verbose)
    stop = threading.Event()
    # Before anything else: a SIGTERM during start-up must still mean a clean stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with user_errors():
        loaded = load(config)
        loaded.model.refuse_kafka_carried(flows)  # one carrier per flow: a UsageError, exit 2
        sources = cdc_sources(loaded, flows)
        if not sources:
            on_kafka = loaded.model.kafka_flows(flows)
            if on_kafka:
                fail(f"no native CDC flow to run: every CDC flow ({', '.join(on_kafka)}) is carried by Kafka; "
                     "run `civicsync capture SOURCE` and `civicsync apply --group G` instead", 2)
            fail("no CDC flow matches", 2)
        workers = [CdcWorker(loaded, s, flows, stop=stop) for s in sources]
        try:
            for w in workers:
                w.prepare()
        except Stopped:  # SIGTERM while the start-up waited to retry: a clean stop, nothing half-applied
            for w in workers:
                w.close()
            raise typer.Exit(0) from None
    errors: list[BaseException] = []

    def run(worker: CdcWorker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported below, then the process exits 1
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(w,), name=f"cdc-{w.source}") for w in workers]
    for t in threads:
        t.start()
    streams = "; ".join(f"{w.source} → {w.target} ({', '.join(w.flows)})" for w in workers)
    err.print(f"streaming {streams}; Ctrl-C to stop", highlight=False)
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
    for t in threads:
        t.join()
    if errors:
        fail(f"a CDC worker stopped: {errors[0]}")
    for w in workers:
        err.print(f"{w.source}: stopped cleanly at position {w.stats.position} after {w.stats.events:,} events",
                  highlight=False)


@cdc_app.command("resync")
def cdc_resync(source: Annotated[str, typer.Argument(help="The source connection whose slot was lost.")],
               config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Recover a lost replication slot (dropped, or invalidated by max_slot_wal_keep_size): make a new
    slot with a snapshot, apply the snapshot, reconcile and repair the source's CDC flows. Stop the
    source's worker first. Exit 1 when a difference remains."""
    from civicsync.runtime.resync import resync_source

    setup(verbose)
    with user_errors():
        loaded = load(config)
        on_kafka = loaded.model.kafka_flows(loaded.model.streaming_flows(source))
        if source not in cdc_sources(loaded) and on_kafka:
            fail(f"the CDC flows of {source!r} ({', '.join(on_kafka)}) are carried by Kafka: it has no native slot "
                 "to resynchronise (`civicsync capture` reads its own slot)", 2)
        if source not in cdc_sources(loaded):
            fail(f"{source!r} is not a connection CDC flows read from; known: {', '.join(cdc_sources(loaded))}", 2)
        results = resync_source(loaded, source)
    for r in results:
        out.print(f"{r.flow} ({r.flow_id}): {r.status}; repaired {r.repaired}; remaining {r.remaining}"
                  + (f"; error: {r.error}" if r.error else ""), highlight=False)
    if not all(r.ok for r in results):
        fail("the new slot streams, but some differences remain: see `civicsync reconcile FLOW`", 1)
    out.print(f"{source}: resynchronised; start the service (or `civicsync cdc run`) to stream again")


# --------------------------------------------------------------------------- dead letters


def _dlq_rows(loaded: LoadedConfig, where: str = "true", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for target in sorted({f.target.connection for f in loaded.model.flows.values()}):
        with connect(loaded.dsn(target), purpose="dlq", autocommit=True, label=target) as conn, \
                conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                "SELECT dead_letter_id AS id, flow, row_key AS key, op, lsn, error_kind AS kind, error, attempts,"
                f" status, first_seen, last_seen, next_attempt_at FROM civicsync.dead_letters WHERE {where}"
                " ORDER BY dead_letter_id", params)
            rows += [{**r, "database": target} for r in cur.fetchall()]
    return rows


@dlq_app.command("list")
def dlq_list(flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
             all_: Annotated[bool, typer.Option("--all", help="Include replayed and discarded.")] = False,
             config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List dead letters (pending ones unless --all)."""
    with user_errors():
        loaded = load(config)
        name = _flow_or_fail(loaded, flow) if flow else None
        rows = [r for r in _dlq_rows(loaded, "true" if all_ else "status = 'pending'")
                if name is None or r["flow"] == name]
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("id", "flow", "key", "kind", "attempts", "status", "next attempt", "error")
    for r in rows:
        table.add_row(f"{r['database']}:{r['id']}", r["flow"], json.dumps(r["key"]), r["kind"], str(r["attempts"]),
                      r["status"], r["next_attempt_at"].strftime("%H:%M:%S") if r["next_attempt_at"] else "-",
                      r["error"][:60])
    out.print(table)
    if not rows:
        out.print("no dead letters")


def _parse_id(ref: str, loaded: LoadedConfig) -> tuple[str, int]:
    targets = sorted({f.target.connection for f in loaded.model.flows.values()})
    if ":" in ref:
        db, num = ref.split(":", 1)
        if db not in targets:
            fail(f"no database called {db!r} holds dead letters; known: {', '.join(targets)}", 2)
    else:
        if len(targets) != 1:
            fail(f"say which database: DATABASE:ID (one of {', '.join(targets)})", 2)
        db, num = targets[0], ref
    if not num.isdigit():
        fail(f"{ref!r} is not a dead-letter id (DATABASE:ID as `dlq list` shows)", 2)
    return db, int(num)


@dlq_app.command("show")
def dlq_show(ref: Annotated[str, typer.Argument(help="DATABASE:ID as `dlq list` shows it.")],
             config: ConfigOpt = None) -> None:
    """Show one dead letter in full."""
    with user_errors():
        loaded = load(config)
        db, num = _parse_id(ref, loaded)
        rows = [r for r in _dlq_rows(loaded, "dead_letter_id = %s", (num,)) if r["database"] == db]
    if not rows:
        fail(f"no dead letter {ref}", 1)
    out.print_json(json.dumps(rows[0], default=str))


@dlq_app.command("replay")
def dlq_replay(ref: Annotated[str | None, typer.Argument(help="DATABASE:ID; or use --flow / --all.")] = None,
               flow: Annotated[str | None, typer.Option(help="Every pending dead letter of this flow.")] = None,
               all_: Annotated[bool, typer.Option("--all", help="Every pending dead letter.")] = False,
               config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Re-apply dead-lettered keys from the source's current rows (after fixing the cause).
    Exit 1 when any of them still fails (its new error is in `dlq list`)."""
    from civicsync.runtime.dlq import replay_all

    setup(verbose)
    if sum((ref is not None, flow is not None, all_)) != 1:
        fail("give exactly one of ID, --flow or --all", 2)
    with user_errors():
        loaded = load(config)
        ids = None
        flows = None
        if ref is not None:
            db, num = _parse_id(ref, loaded)
            rows = [r for r in _dlq_rows(loaded, "dead_letter_id = %s", (num,)) if r["database"] == db]
            if not rows:
                fail(f"no dead letter {ref}", 1)
            ids, flows = [num], [rows[0]["flow"]]
        elif flow is not None:
            flows = [_flow_or_fail(loaded, flow)]
        counts = replay_all(loaded, flows, ids)
        left = [r for r in _dlq_rows(loaded, "status = 'pending'") if flows is None or r["flow"] in flows]
    out.print(f"replayed {counts.replayed}; still pending {len(left)}"
              + (f" ({counts.failed} failed again)" if counts.failed else ""))
    if counts.failed:
        fail(f"{counts.failed} dead letter{'s' * (counts.failed != 1)} still cannot be applied: "
              "see `civicsync dlq list` for the errors", 1)


def _flow_or_fail(loaded: LoadedConfig, flow: str) -> str:
    """The config name of ``flow`` (name or id); an unknown flow is a usage error (exit 2)."""
    try:
        return loaded.model.flow_name(flow)
    except KeyError:
        fail(f"no flow called {flow!r}; known: {', '.join(loaded.model.flows)}", 2)


@dlq_app.command("discard")
def dlq_discard(ref: Annotated[str, typer.Argument(help="DATABASE:ID as `dlq list` shows it.")],
                config: ConfigOpt = None) -> None:
    """Give up on a dead letter: its key is no longer held back."""
    with user_errors():
        loaded = load(config)
        db, num = _parse_id(ref, loaded)
        with connect(loaded.dsn(db), purpose="dlq", autocommit=True, label=db) as conn:
            cur = conn.execute("UPDATE civicsync.dead_letters SET status = 'discarded', held = NULL,"
                               " last_seen = clock_timestamp() WHERE dead_letter_id = %s AND status = 'pending'",
                               (num,))
    if cur.rowcount != 1:
        fail(f"no pending dead letter {ref}", 1)
    out.print(f"discarded {ref}")
