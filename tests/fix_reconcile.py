"""Helpers and fixtures for reconciliation tests: the reference deployment with every flow run
normally (batch flows run, CDC flows through their worker's initial snapshot), so that source and
target agree before a test plants a difference."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from civicsync.config import LoadedConfig
from civicsync.jobs.batch import run_batch
from civicsync.localpg import LocalPostgres
from civicsync.reconcile import ReconcileResult, reconcile_flow
from civicsync.reference.seed import seed
from civicsync.runtime.cdc import CdcWorker
from civicsync.status import cdc_sources
from fix_cdc import cdc_config, cleanup
from fix_db import Deployment, new_deployment

CITIZENS = 120
CLASSES = ("missing", "extra", "different", "rejected")


def sync_everything(dep: Deployment, citizens: int = CITIZENS) -> LoadedConfig:
    """Seed, run every batch flow, then apply every CDC flow's initial snapshot (the worker's own
    path) and drop its slot. Returns the config (CDC roles and random slot names)."""
    config = cdc_config(dep)
    seed(dep.warehouse_dsn, dep.citizen_dsn, citizens)
    for name, flow in config.model.flows.items():
        if flow.kind in ("batch", "aggregate"):
            run_batch(config, name).raise_for_error()
    for source in cdc_sources(config):
        worker = CdcWorker(config, source)
        try:
            worker.prepare()
        finally:
            worker.close()
            cleanup(config, source)
    return config


@pytest.fixture(scope="module")
def synced(pg_server: LocalPostgres) -> Iterator[tuple[Deployment, LoadedConfig]]:
    """One module's reference deployment in which every flow has run normally."""
    dep = new_deployment(pg_server)
    try:
        yield dep, sync_everything(dep)
    finally:
        dep.drop()


def q(dep: Deployment, db: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a database (autocommit); its rows, if it returns any."""
    with dep.connect(db) as conn:
        cur = conn.execute(query, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def found(result: ReconcileResult) -> dict[str, set[tuple[tuple[str | None, ...], tuple[str, ...]]]]:
    """Per class, the (key values, differing columns) found."""
    out: dict[str, set[tuple[tuple[str | None, ...], tuple[str, ...]]]] = {c: set() for c in CLASSES}
    for d in result.differences:
        out[d.kind].add((d.key, d.columns))
    return out


def assert_converges(config: LoadedConfig, flow: str) -> ReconcileResult:
    """Repair the flow, then a second reconciliation finds nothing."""
    repaired = reconcile_flow(config, flow, repair=True)
    assert repaired.error is None, repaired.error
    assert repaired.repaired == repaired.found, repaired.as_dict()
    again = reconcile_flow(config, flow)
    assert again.error is None and again.found == 0, again.as_dict()
    return repaired
