"""Reconciliation: find, report and repair every difference between what a flow's rules derive from
its source and what its target holds.

``reconcile_flow(config, "F2", repair=True)`` runs one reconciliation; ``latest_results(config)`` gives
the last one of every flow (for the status API and page). How it works, module by module:

- :mod:`~civicsync.reconcile.plan`: what the flow's config says is compared, and what counts as a
  difference (field ownership, soft deletes, update_only, lifecycles, top-N, aggregates);
- :mod:`~civicsync.reconcile.compile` and :mod:`~civicsync.reconcile.relations`: the rules as SQL, so the
  source side is derived inside the source database;
- :mod:`~civicsync.reconcile.checksum`: range checksums on both sides, splitting only ranges that
  disagree (equal tables cost about two aggregate scans);
- :mod:`~civicsync.reconcile.derive` and :mod:`~civicsync.reconcile.verify`: the candidates decided
  through the flow's own Python chain and the apply path's own rules, re-checked until settled;
- :mod:`~civicsync.reconcile.repair`: fixes through the flow's own apply path;
- :mod:`~civicsync.reconcile.store`: runs and differences in ``civicsync.reconcile_*``, and metrics.
"""

from civicsync.reconcile.engine import ReconcileFailedError, ReconcileResult, reconcile_flow
from civicsync.reconcile.plan import UnknownFlowError, build_plan
from civicsync.reconcile.store import latest_results

__all__ = ["ReconcileFailedError", "ReconcileResult", "UnknownFlowError", "build_plan", "latest_results",
           "reconcile_flow"]
