"""civicsync's side of bench/vs_debezium.py: drain one slot in this process, measure, write a JSON result file.

    .venv/bin/python bench/vs_debezium_civicsync.py --dsn DSN --slot S --publication P --db DB --changes N
                                                     --result FILE [--mode events|json] [--spawned EPOCH]

Consumes the replication stream (civicsync.capture.replication.ReplicationStream, pgoutput over psycopg2), turns
every row change into civicsync's Debezium-envelope ChangeEvent (``events_of``) and acknowledges each transaction's
end LSN, until ``--changes`` events have been produced. ``--mode json`` also builds each event's envelope dict and
serialises it with json.dumps (key and value, as Debezium's JSON format hands out strings).

Times: ``first`` is when the first transaction came out of the stream, ``last`` is when the N-th event was in
hand; rate = N / (last - first). Start-up: from the parent's spawn time (``--spawned``, wall clock) and from the
stream being opened (after imports) to the first event. Peak RSS: this process's ru_maxrss (the parent also reads
it from os.wait4 and samples it with psutil).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

T_PROCESS = time.time()  # as early as this module runs (the interpreter has started)

from civicsync.capture.changes import events_of  # noqa: E402
from civicsync.capture.replication import ReplicationStream  # noqa: E402
from civicsync.events import ChangeEvent  # noqa: E402
from civicsync.kafka.envelope import encode  # noqa: E402


def _value(event: ChangeEvent) -> Any:
    """The event's Debezium-format value, as the Kafka codec writes it."""
    value = encode(event)[-1].value
    return json.loads(value) if value is not None else None

def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--slot", required=True)
    p.add_argument("--publication", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--changes", type=int, required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--mode", choices=("events", "json"), default="events")
    p.add_argument("--spawned", type=float, default=None)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()

    imported = time.time()
    rss_after_imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stream = ReplicationStream(args.dsn, slot=args.slot, publication=args.publication)
    opened_wall = time.time()
    opened = time.perf_counter()
    deadline = opened + args.timeout
    count = 0
    ops: dict[str, int] = {}
    txns = 0
    first = last = 0.0
    first_wall = 0.0
    first_event: dict[str, object] | None = None
    last_event: dict[str, object] | None = None
    serialised_bytes = 0
    as_json = args.mode == "json"
    try:
        while count < args.changes:
            txn = stream.poll(1.0)
            if txn is None:
                if time.perf_counter() > deadline:
                    break
                continue
            if not txn.changes:
                stream.acknowledge(txn.end_lsn)
                continue
            if count == 0:
                first = time.perf_counter()
                first_wall = time.time()
            events = events_of(txn, args.db)
            if as_json:
                for ev in events:  # the Kafka path's own codec: what a producer would send
                    serialised_bytes += sum(len(r.key) + len(r.value or b"") for r in encode(ev))
            for ev in events:
                ops[ev.op] = ops.get(ev.op, 0) + 1
            if first_event is None:
                first_event = {"key": events[0].key, "value": _value(events[0])}
            count += len(events)
            txns += 1
            stream.acknowledge(txn.end_lsn)
            if count >= args.changes:
                last = time.perf_counter()
                last_event = {"key": events[-1].key, "value": _value(events[-1])}
    finally:
        stream.close()

    result = {
        "engine": "civicsync" if not as_json else "civicsync+json",
        "events": count,
        "transactions": txns,
        "ops": ops,
        "seconds_first_to_last": last - first if count >= args.changes else None,
        "events_per_s": count / (last - first) if count >= args.changes and last > first else None,
        "startup_from_spawn_s": first_wall - args.spawned if args.spawned and first_wall else None,
        "startup_from_open_s": first_wall - opened_wall if first_wall else None,
        "interpreter_and_imports_s": imported - args.spawned if args.spawned else None,
        "rss_after_imports_mb": rss_after_imports_kb / 1024,
        "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "serialised_bytes": serialised_bytes if as_json else None,
        "first_event": first_event,
        "last_event": last_event,
        "process_started_at": T_PROCESS,
    }
    with open(args.result, "w") as fh:
        json.dump(result, fh, default=str)
    return 0 if count >= args.changes else 1


if __name__ == "__main__":
    sys.exit(main())
