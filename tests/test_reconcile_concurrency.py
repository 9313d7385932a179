"""Writes while a comparison runs never show up as differences: the event path applying changes as
they happen (F7 with its worker running and a writer hammering the source), and batch runs committing
in the middle of a comparison (F1, F2)."""

from __future__ import annotations

import random
import threading
from typing import Any

from civicsync.config import LoadedConfig
from civicsync.jobs.batch import run_batch
from civicsync.reconcile import reconcile_flow
from civicsync.reference.seed import seed
from fix_cdc import cdc_config, running, wait_for
from fix_db import Deployment
from fix_reconcile import q


class Writer(threading.Thread):
    """Inserts, updates and deletes portal documents until stopped."""

    def __init__(self, dep: Deployment) -> None:
        super().__init__(daemon=True)
        self.dep = dep
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        apps = [r[0] for r in q(self.dep, "citizen", "SELECT application_id FROM applications")]
        docs = [r[0] for r in q(self.dep, "citizen", "SELECT document_id FROM application_documents")]
        next_id = 500_000
        try:
            with self.dep.connect("citizen") as conn:
                while not self.stop.is_set():
                    action = rng.random()
                    if action < 0.4:
                        next_id += 1
                        conn.execute("INSERT INTO application_documents (document_id, application_id, doc_type,"
                                     " file_name, storage_uri, size_bytes) VALUES (%s, %s, 'PHOTO', 'f', 's3://x', 1)",
                                     (next_id, rng.choice(apps)))
                        docs.append(next_id)
                    elif action < 0.9:
                        conn.execute("UPDATE application_documents SET size_bytes = size_bytes + 1"
                                     " WHERE document_id = %s", (rng.choice(docs),))
                    else:
                        conn.execute("DELETE FROM application_documents WHERE document_id = %s",
                                     (docs.pop(rng.randrange(len(docs))),))
                    self.writes += 1
                    self.stop.wait(0.003)
        except BaseException as exc:
            self.error = exc


def test_writes_streaming_in_during_a_comparison_are_not_differences(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = cdc_config(dep)
    seed(dep.warehouse_dsn, dep.citizen_dsn, 80)
    with running(config, "citizen", ["F7"]):
        writer = Writer(dep)
        writer.start()
        try:
            results = [reconcile_flow(config, "F7") for _ in range(4)]
        finally:
            writer.stop.set()
            writer.join(10)
        assert writer.error is None and writer.writes > 50
        assert all(r.error is None and r.found == 0 for r in results), [
            (r.as_dict()["samples"], r.notes) for r in results if not r.ok]
        # The comparisons did race with the stream: their checksums saw changes in flight.
        assert sum(r.candidates for r in results) > 0
        wait_for(lambda: reconcile_flow(config, "F7").ok, what="the stream to settle")


def batch_run_at_verify(config: LoadedConfig, flow: str) -> Any:
    """A progress hook running the batch flow once the checksums are done and before the verify phase
    reads: a run committing in the middle of the comparison."""
    done: list[bool] = []

    def hook(phase: str, _done: int, _total: int | None) -> None:
        if phase == "verify" and not done:
            done.append(True)
            run_batch(config, flow).raise_for_error()

    return hook


def test_batch_runs_committing_during_a_comparison_are_not_differences(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = dep.config()
    seed(dep.warehouse_dsn, dep.citizen_dsn, 60)
    for flow in ("F1", "F2"):
        run_batch(config, flow).raise_for_error()
    q(dep, "warehouse", "UPDATE schemes SET name = name || ' (renamed)', updated_at = now()")
    q(dep, "warehouse", "UPDATE citizen_profiles SET full_name = full_name || ' Jr', updated_at = now()"
                        " WHERE citizen_id IN (SELECT citizen_id FROM citizen_profiles ORDER BY 1 LIMIT 20)")
    results = [reconcile_flow(config, flow, progress=batch_run_at_verify(config, flow)) for flow in ("F1", "F2")]
    for result in results:
        # The checksums saw the changes; by the time the keys were verified the batch had synced them.
        assert result.candidates > 0, result.as_dict()
        assert result.error is None and result.found == 0, result.as_dict()
