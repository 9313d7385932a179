"""Recovering a lost replication slot: `civicsync cdc resync SOURCE`.

A slot that was dropped, or invalidated by ``max_slot_wal_keep_size``, has lost the changes the
source made since the worker's last position; the worker refuses to start on it (a new slot would
silently skip them). Recovery, in one command, with the source's worker stopped:

1. a new slot with an exported snapshot replaces the lost one (the worker's start with ``resync``);
2. every row of the snapshot is applied over what the targets hold, through each flow's usual apply
   path: idempotent (a row that did not change is not written, an event log gets a row only where the
   watched value differs from the target's), and the new slot's position is stored with it;
3. each event-path flow of the source is reconciled with repair, which removes what the snapshot
   cannot: target rows whose source rows were deleted meanwhile.

Streaming then resumes from the new slot. What no command can restore: an event log's intermediate
transitions of a row that changed several times while the slot was lost (their WAL is gone); the
snapshot gives its net transition, once.
"""

from __future__ import annotations

import logging

from civicsync.capture.slots import slot_info
from civicsync.config import LoadedConfig
from civicsync.config.models import slot_name
from civicsync.db.connect import connect
from civicsync.errors import FatalError
from civicsync.reconcile.engine import ReconcileResult, reconcile_flow
from civicsync.runtime.cdc import CdcWorker

log = logging.getLogger(__name__)


def resync_source(config: LoadedConfig, source: str) -> list[ReconcileResult]:
    """Replace ``source``'s slot by a new one, apply its snapshot and reconcile its event-path flows
    with repair; returns the reconciliations (one per flow)."""
    model = config.model
    flows = model.native_flows(source)  # the native slot's flows; a Kafka-carried flow is capture's
    if not flows:
        on_kafka = model.kafka_flows(model.streaming_flows(source))
        if on_kafka:
            raise FatalError(f"the CDC flows of connection {source!r} ({', '.join(on_kafka)}) are carried by Kafka: "
                             "there is no native slot to resynchronise")
        raise FatalError(f"no CDC flow reads from connection {source!r}")
    slot = slot_name(model, source)
    with connect(config.dsn(source, "capture"), purpose="resync", autocommit=True, label=source) as src:
        info = slot_info(src, slot)
    if info is not None and info.active:
        raise FatalError(f"replication slot {slot} on {source} is in use: stop the worker that reads it (the "
                         "service, or `civicsync cdc run`) before resynchronising")
    targets = sorted({model.flows[n].target.connection for n in flows})
    for target in targets:
        worker = CdcWorker(config, source, [n for n in flows if model.flows[n].target.connection == target],
                           resync=True)
        try:
            worker.prepare()
        finally:
            worker.close()
    log.info("slot %s on %s: new slot and snapshot applied; reconciling %s", slot, source, ", ".join(flows))
    return [reconcile_flow(config, name, repair=True) for name in flows]
