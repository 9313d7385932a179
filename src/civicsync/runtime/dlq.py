"""Replaying every pending dead letter now, for the CLI (``civicsync dlq replay``) and the API.

CDC flows replay through their source's worker (which holds the flows' appliers and blocked keys);
batch flows through a re-read of their keys. The replay itself lives in civicsync.deadletters.
"""

from __future__ import annotations

from civicsync.config import LoadedConfig
from civicsync.deadletters.batch import replay_batch_dead_letters
from civicsync.deadletters.cdc import ReplayCounts
from civicsync.runtime.cdc import CdcWorker
from civicsync.status import cdc_sources


def replay_all(config: LoadedConfig, flows: list[str] | None = None, ids: list[int] | None = None) -> ReplayCounts:
    """Replay the pending dead letters of ``flows`` (config names; every flow if None), or only ``ids``:
    the CDC flows through each source's worker, the batch flows through a re-read of their keys. What
    ``civicsync dlq replay`` and the API's replay do; a database error is raised."""
    counts = ReplayCounts()
    for source in cdc_sources(config, flows, carried=True):  # Kafka-carried flows' letters too: no slot involved
        counts += CdcWorker(config, source, flows, carried=True).replay_now(ids)
    for name, flow in config.model.flows.items():
        if flow.kind == "batch" and (flows is None or name in flows):
            result = replay_batch_dead_letters(config, name, ids)
            counts += ReplayCounts(result.replayed, result.still_pending)
    return counts
