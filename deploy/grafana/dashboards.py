"""Generate civicsync's Grafana dashboards (grafana-foundation-sdk, Grafana 11.6 schema).

    .venv/bin/python deploy/grafana/dashboards.py           # (re)write the JSON files next to this script
    .venv/bin/python deploy/grafana/dashboards.py --check   # exit 1 if a committed file differs from the code

Three dashboards, each with a Prometheus data source variable and job / instance / flow filters:

- ``sync-overview.json``  is everything running, flowing and answering? (flows, CDC, batch, API)
- ``data-quality.json``   dead letters, conflicts, reconciliation, rows rejected by batch runs
- ``consumer-lag.json``   replication lag (bytes, seconds), WAL retained by the slots, apply latency,
                          Kafka consumer groups' lag per partition

Metric names come from ``src/civicsync/metrics.py``; ``tests/test_dashboards.py`` checks every query
against it, and ``tests/test_prometheus_live.py`` runs every query against a real Prometheus
scraping a running service. The JSON is committed: import it in Grafana (Dashboards → New → Import)
or provision it from this folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Every selector filters on the dashboard's variables.
T = 'job="$job", instance=~"$instance"'          # target filter: any civicsync metric
F = T + ', flow=~"$flow"'                          # ... and the flow filter, for metrics labelled by flow
RATE = "$__rate_interval"

GiB = 1024**3

Builder = Any  # a panel builder of any kind


# --------------------------------------------------------------------------- building blocks

def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
          fmt: pm.PromQueryFormat | None = None) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if fmt is not None:
        q = q.format(fmt)
    return q


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


def ts(title: str, description: str, *queries: prom.Dataquery, unit: str = "short",
       limits: tuple[tuple[float | None, str], ...] = (), width: int = 12, height: int = 8,
       stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .targets(list(queries)).unit(unit).span(width).height(height)
             .line_width(1).fill_opacity(10).show_points(common.VisibilityMode.NEVER)
             .legend(common_legend()).tooltip(common_tooltip()))
    if limits:
        panel = (panel.thresholds(thresholds(*limits))
                 .thresholds_style(common_thresholds_style()))
    if stacked:
        panel = panel.stacking(common_stacking())
    return panel


def single(title: str, description: str, q: prom.Dataquery, *, unit: str = "short",
           limits: tuple[tuple[float | None, str], ...] = ((None, "green"),),
           mappings: list[dm.ValueMapping] | None = None, width: int = 4, height: int = 4) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE).with_target(q)
             .unit(unit).span(width).height(height).thresholds(thresholds(*limits))
             .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.NONE)
             .reduce_options(reduce_last()))
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def states(title: str, description: str, q: prom.Dataquery, mappings: list[dm.ValueMapping], *,
           limits: tuple[tuple[float | None, str], ...], width: int = 24, height: int = 6) -> statetimeline.Panel:
    return (statetimeline.Panel().title(title).description(description).datasource(DATASOURCE).with_target(q)
            .mappings(mappings).thresholds(thresholds(*limits)).span(width).height(height)
            .show_value(common.VisibilityMode.NEVER).legend(common_legend()))


def common_legend() -> cb.VizLegendOptions:
    return (cb.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"]))


def common_tooltip() -> cb.VizTooltipOptions:
    return cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def common_thresholds_style() -> cb.GraphThresholdsStyleConfig:
    return cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)


def common_stacking() -> cb.StackingConfig:
    return cb.StackingConfig().mode(common.StackingMode.NORMAL)


def reduce_last() -> cb.ReduceDataOptions:
    return cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def value_map(options: dict[str, tuple[str, str]]) -> dm.ValueMap:
    return dm.ValueMap(options={k: dm.ValueMappingResult(text=text, color=color, index=i)
                                for i, (k, (text, color)) in enumerate(options.items())})


UP_DOWN = [value_map({"1": ("UP", "green"), "0": ("DOWN", "red")})]
FAILED_OK = [value_map({"0": ("ok", "green"), "1": ("FAILED", "red")})]


def variables() -> list[Builder]:
    def label_values(name: str, label: str, expr: str, *, multi: bool) -> db.QueryVariable:
        var = (db.QueryVariable(name).label(label).datasource(DATASOURCE)
               .query({"query": f"label_values({expr}, {name})", "refId": f"{name}-values", "qryType": 1})
               .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        if multi:
            var = var.multi(True).include_all(True).all_value(".*").current(
                dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        else:
            var = var.current(dm.VariableOption(selected=True, text="civicsync", value="civicsync"))
        return var

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_values("job", "Job", "civicsync_build_info", multi=False),
        label_values("instance", "Instance", 'civicsync_build_info{job="$job"}', multi=True),
        label_values("flow", "Flow", 'civicsync_flow_up{job="$job", instance=~"$instance"}', multi=True),
    ]


def new_dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    board = (db.Dashboard(title).uid(uid).description(description).tags(["civicsync"])
             .refresh("30s").time("now-6h", "now").timezone("browser").editable()
             .tooltip(dm.DashboardCursorSync.CROSSHAIR).variables(variables())
             .link(db.DashboardLink("civicsync dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                   .tags(["civicsync"]).as_dropdown(True).include_vars(True).keep_time(True)))
    return board


def with_panels(board: db.Dashboard, rows: list[tuple[str, list[Builder]]]) -> dict[str, Any]:
    """Lay out the rows; number the panels in order (stable ids keep the JSON diff-able)."""
    next_id = 1
    for title, panels in rows:
        board = board.with_row(db.Row(title).id(next_id))
        next_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(next_id))
            next_id += 1
    out: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return out


# --------------------------------------------------------------------------- the dashboards

def sync_overview() -> dict[str, Any]:
    board = new_dashboard(
        "civicsync-sync-overview", "civicsync / Sync overview",
        "Is every flow running, is CDC keeping up, did the batch runs succeed, is the API healthy? "
        "Alerts: deploy/prometheus/rules/civicsync.rules.yml; runbooks: docs/runbooks/.")
    health = [
        single("Service", "Can Prometheus scrape civicsync (`up`)? Runbook: CivicsyncDown.",
               query(f"up{{{T}}}", "{{instance}}", instant=True),
               limits=((None, "red"), (1, "green")), mappings=UP_DOWN),
        single("Flows up", "Flows running as configured (CDC worker streaming; batch flow scheduled).",
               query(f"sum(civicsync_flow_up{{{F}}})", instant=True)),
        single("Flows down", "Flows not running as configured (a CDC worker crashed, stalled or starting; a batch "
               "flow not scheduled). Runbook: CivicsyncFlowDown.",
               query(f"sum(1 - civicsync_flow_up{{{F}}})", instant=True),
               limits=((None, "green"), (1, "red"))),
        single("Dead letters waiting", "Pending dead letters, all flows. New ones and details: the Data quality "
               "dashboard.",
               query(f"sum(civicsync_dead_letters{{{F}}})", instant=True),
               limits=((None, "green"), (1, "orange"))),
        single("Worst replication lag", "Largest CDC lag in seconds (0 when caught up).",
               query(f"max(civicsync_replication_lag_seconds{{{F}}})", instant=True), unit="s",
               limits=((None, "green"), (10, "orange"), (60, "red"))),
        single("Failed batch flows", "Batch flows whose most recent run failed. Runbook: CivicsyncBatchRunFailed.",
               query(f"sum(civicsync_batch_last_run_failed{{{F}}})", instant=True),
               limits=((None, "green"), (1, "red"))),
        states("Flow up", "1 while the flow runs as configured, per flow. A CDC flow is DOWN while its worker "
               "starts, restarts after a crash (see Worker restarts) or is stalled retrying a database "
               "(`/api/v1/status` shows the phase and last error). Runbook: CivicsyncFlowDown.",
               query(f"max by (flow) (civicsync_flow_up{{{F}}})", "{{flow}}"), UP_DOWN,
               limits=((None, "red"), (1, "green"))),
    ]
    cdc = [
        ts("Events captured / applied per second", "Row changes read from the slots and committed to the targets.",
           query(f"sum by (flow) (rate(civicsync_cdc_events_captured_total{{{F}}}[{RATE}]))", "{{flow}} captured"),
           query(f"sum by (flow) (rate(civicsync_cdc_events_applied_total{{{F}}}[{RATE}]))", "{{flow}} applied",
                 "B"),
           unit="ops"),
        ts("CDC apply latency p99 (SLA 5 s)", "Source commit to target commit, per worker. "
           "Runbook: CivicsyncCdcApplyLatencyHigh.",
           query("histogram_quantile(0.99, sum by (worker, le) "
                 f"(rate(civicsync_cdc_apply_latency_seconds_bucket{{{T}}}[{RATE}])))", "{{worker}} p99"),
           unit="s", limits=((None, "green"), (5, "red"))),
        ts("Replication lag", "Age of the oldest change not yet applied, per flow. "
           "Runbook: CivicsyncReplicationLagHigh.",
           query(f"max by (flow) (civicsync_replication_lag_seconds{{{F}}})", "{{flow}}"),
           unit="s", limits=((None, "green"), (60, "red"))),
        ts("Worker restarts", "CDC workers restarted by the supervisor after a crash (per hour). "
           "Runbook: CivicsyncWorkerRestarting.",
           query(f"sum by (worker) (increase(civicsync_worker_restarts_total{{{T}}}[1h]))", "{{worker}}"),
           limits=((None, "green"), (3, "red"))),
    ]
    batch = [
        ts("Batch runs by outcome (per hour)", "Runs of each batch flow, succeeded or failed.",
           query(f"sum by (flow, status) (increase(civicsync_batch_runs_total{{{F}}}[1h]))", "{{flow}} {{status}}")),
        ts("Time since last successful run", "Per batch flow, against 1.5 x its schedule's longest gap "
           "(the CivicsyncBatchRunMissed threshold).",
           query(f"time() - max by (flow) (civicsync_batch_last_success_timestamp_seconds{{{F}}})", "{{flow}}"),
           query(f"1.5 * max by (flow) (civicsync_batch_schedule_interval_seconds{{{F}}})", "{{flow}} limit", "B"),
           unit="s"),
        ts("Batch run duration p95 (last day)", "Wall time of batch runs.",
           query("histogram_quantile(0.95, sum by (flow, le) "
                 f"(increase(civicsync_batch_run_duration_seconds_bucket{{{F}}}[1d])))", "{{flow}}"),
           unit="s"),
        states("Last batch run", "Whether each batch flow's most recent run failed.",
               query(f"max by (flow) (civicsync_batch_last_run_failed{{{F}}})", "{{flow}}"), FAILED_OK,
               limits=((None, "green"), (1, "red")), width=12, height=8),
    ]
    api = [
        ts("API requests by route and status", "Requests per second to the HTTP API.",
           query(f"sum by (route, status) (rate(civicsync_api_requests_total{{{T}}}[{RATE}]))",
                 "{{route}} {{status}}"),
           unit="reqps", width=8),
        ts("API 5xx share", "Share of requests answered 5xx, per route (0 when none). "
           "Runbook: CivicsyncApiErrorRateHigh.",
           query(f'(sum by (route) (rate(civicsync_api_requests_total{{{T}, status=~"5.."}}[{RATE}]))'
                 f" or 0 * sum by (route) (rate(civicsync_api_requests_total{{{T}}}[{RATE}])))"
                 f" / sum by (route) (rate(civicsync_api_requests_total{{{T}}}[{RATE}]))", "{{route}}"),
           unit="percentunit", limits=((None, "green"), (0.05, "red")), width=8),
        ts("API latency p99", "Request handling time per route.",
           query("histogram_quantile(0.99, sum by (route, le) "
                 f"(rate(civicsync_api_request_duration_seconds_bucket{{{T}}}[{RATE}])))", "{{route}}"),
           unit="s", width=8),
    ]
    return with_panels(board, [("Health", health), ("Change data capture", cdc), ("Batch runs", batch),
                               ("HTTP API", api)])


def data_quality() -> dict[str, Any]:
    board = new_dashboard(
        "civicsync-data-quality", "civicsync / Data quality",
        "Dead letters, conflicts decided by the ownership policies, reconciliation results and rows "
        "rejected by batch runs. Dead letters hold keys and errors only: `civicsync dlq list`.")
    dead_letters = [
        single("Dead letters waiting", "Pending dead letters, all selected flows.",
               query(f"sum(civicsync_dead_letters{{{F}}})", instant=True),
               limits=((None, "green"), (1, "orange")), width=4),
        single("New dead letters (1 h)", "Dead letters created in the last hour, all selected flows "
               "(not lowered by replays).",
               query(f"sum(increase(civicsync_dead_letters_created_total{{{F}}}[1h]))", instant=True),
               limits=((None, "green"), (1, "orange")), width=4),
        single("Oldest dead letter", "Age of the oldest pending dead letter. Runbook: CivicsyncDeadLettersOld.",
               query(f"max(civicsync_dead_letter_oldest_age_seconds{{{F}}})", instant=True), unit="s",
               limits=((None, "green"), (1, "orange"), (3600, "red")), width=4),
        single("Reconciliation differences", "Keys the last reconciliations found different, all classes.",
               query(f"sum(civicsync_reconcile_differences{{{F}}})", instant=True),
               limits=((None, "green"), (1, "red")), width=6),
        single("Rows rejected (24 h)", "Rows batch runs rejected into the dead-letter store.",
               query(f'sum(increase(civicsync_batch_rows_total{{{F}, outcome="rejected"}}[1d]))', instant=True),
               limits=((None, "green"), (1, "orange")), width=6),
        ts("New dead letters by flow (per 15 min)", "Dead letters created in the last 15 minutes: CDC events "
           "that broke a rule or a constraint, rows batch runs rejected. A replay does not hide them. "
           "Runbook: CivicsyncDeadLettersGrowing (new ones in every 15-minute window for 15 minutes, some "
           "waiting).",
           query(f"sum by (flow) (increase(civicsync_dead_letters_created_total{{{F}}}[15m]))", "{{flow}}"),
           width=8),
        ts("Dead letters waiting by flow", "Pending dead letters (replays and discards lower it).",
           query(f"sum by (flow) (civicsync_dead_letters{{{F}}})", "{{flow}}"), width=8),
        ts("Oldest dead letter age by flow", "Runbook: CivicsyncDeadLettersOld (alerts over 1 h).",
           query(f"max by (flow) (civicsync_dead_letter_oldest_age_seconds{{{F}}})", "{{flow}}"),
           unit="s", limits=((None, "green"), (3600, "red")), width=8),
    ]
    conflicts = [
        ts("Conflicts decided per hour", "Field conflicts the ownership policies decided "
           "(each is recorded in civicsync.conflicts).",
           query(f"sum by (flow) (increase(civicsync_conflicts_decided_total{{{F}}}[1h]))", "{{flow}}"), width=24),
    ]
    reconcile = [
        ts("Reconciliation differences by class", "missing / extra / different keys found by each flow's "
           "last reconciliation. Runbook: CivicsyncReconcileDifferences.",
           query(f"sum by (flow, class) (civicsync_reconcile_differences{{{F}}})", "{{flow}} {{class}}"),
           limits=((None, "green"), (1, "red")), width=8),
        ts("Keys repaired per day", "Keys repaired by reconciliations the service ran (flows with "
           "`reconcile.repair`, e.g. F8 hourly). Repairs by `civicsync reconcile --repair` from the command line "
           "are not counted here: see civicsync.reconcile_runs.",
           query(f"sum by (flow) (increase(civicsync_reconcile_repaired_total{{{F}}}[1d]))", "{{flow}}"), width=8),
        ts("Time since last reconciliation", "Per flow, from the stored results (runs by hand and before a "
           "restart count too).",
           query(f"time() - max by (flow) (civicsync_reconcile_last_run_timestamp_seconds{{{F}}})", "{{flow}}"),
           unit="s", width=8),
        ts("Reconciliation duration p95 (last day)", "Wall time of reconciliations run by the service.",
           query("histogram_quantile(0.95, sum by (flow, le) "
                 f"(increase(civicsync_reconcile_duration_seconds_bucket{{{F}}}[1d])))", "{{flow}}"),
           unit="s", width=24, height=6),
    ]
    batch = [
        ts("Batch rows by outcome (per hour)", "read / written / deleted / rejected rows of batch runs.",
           query(f"sum by (flow, outcome) (increase(civicsync_batch_rows_total{{{F}}}[1h]))",
                 "{{flow}} {{outcome}}")),
        ts("Share of rows rejected (last day)", "Rejected / read per batch flow (over `validate.max_rejected` "
           "fails the run).",
           query(f'sum by (flow) (increase(civicsync_batch_rows_total{{{F}, outcome="rejected"}}[1d]))'
                 f' / sum by (flow) (increase(civicsync_batch_rows_total{{{F}, outcome="read"}}[1d]))', "{{flow}}"),
           unit="percentunit"),
    ]
    masking = [
        single("Rows with raw personal data", "Target rows holding raw protected values at the last scheduled "
               "`civicsync audit pii` (0: clean). Runbook: CivicsyncPiiLeak.",
               query(f"max(civicsync_pii_audit_leaking_rows{{{T}}})", instant=True),
               limits=((None, "green"), (1, "red")), width=8),
        ts("Time since last PII audit", "The service runs `audit pii` on `audit.pii.schedule` (daily by default).",
           query(f"time() - max by (instance) (civicsync_pii_audit_last_run_timestamp_seconds{{{T}}})",
                 "{{instance}}"), unit="s", width=16),
    ]
    return with_panels(board, [("Dead letters", dead_letters), ("Conflicts", conflicts),
                               ("Reconciliation", reconcile), ("Batch rows", batch), ("Masking", masking)])


def consumer_lag() -> dict[str, Any]:
    board = new_dashboard(
        "civicsync-consumer-lag", "civicsync / Consumer lag",
        "How far behind the CDC consumers are: lag in bytes (per slot) and seconds (per flow), WAL the "
        "source keeps for each slot, and source-commit-to-target-commit latency.")
    lag = [
        ts("Replication lag (bytes) by slot", "WAL between the source's current position and what civicsync "
           "confirmed.", query(f"max by (slot) (civicsync_replication_lag_bytes{{{T}}})", "{{slot}}"),
           unit="bytes", width=8),
        ts("Replication lag (seconds) by flow", "Age of the oldest change not yet applied (0 when caught up). "
           "Runbook: CivicsyncReplicationLagHigh.",
           query(f"max by (flow) (civicsync_replication_lag_seconds{{{F}}})", "{{flow}}"),
           unit="s", limits=((None, "green"), (60, "red")), width=8),
        ts("WAL retained by slot", "WAL the source cannot recycle because of the slot. Alerts: 1 GiB (warning), "
           "8 GiB (critical).", query(f"max by (slot) (civicsync_slot_wal_retained_bytes{{{T}}})", "{{slot}}"),
           unit="bytes", limits=((None, "green"), (GiB, "orange"), (8 * GiB, "red")), width=8),
    ]
    latency = [
        ts("Apply latency p50 / p95 / p99", "Source commit to target commit per worker. SLA: p99 under 5 s.",
           *[query(f"histogram_quantile({q}, sum by (worker, le) "
                   f"(rate(civicsync_cdc_apply_latency_seconds_bucket{{{T}}}[{RATE}])))", f"{{{{worker}}}} p{p}", ref)
             for q, p, ref in ((0.5, "50", "A"), (0.95, "95", "B"), (0.99, "99", "C"))],
           unit="s", limits=((None, "green"), (5, "red"))),
        heatmap.Panel().title("Apply latency distribution").description(
            "Source transactions per latency bucket (all workers).").datasource(DATASOURCE).with_target(
            query(f"sum by (le) (increase(civicsync_cdc_apply_latency_seconds_bucket{{{T}}}[{RATE}]))",
                  "{{le}}", fmt=pm.PromQueryFormat.HEATMAP)).span(12).height(8).calculate(False),
        ts("Captured vs applied events per second", "A persistent gap means the target side is the bottleneck.",
           query(f"sum by (flow) (rate(civicsync_cdc_events_captured_total{{{F}}}[{RATE}]))", "{{flow}} captured"),
           query(f"sum by (flow) (rate(civicsync_cdc_events_applied_total{{{F}}}[{RATE}]))", "{{flow}} applied",
                 "B"),
           unit="ops", width=24),
    ]
    kafka = [
        ts("Kafka consumer lag (seconds) by partition", "Age of the oldest record a consumer group of "
           "`civicsync apply --group` has not applied (0 when caught up); the roadmap's target is under 60 s. "
           "Runbook: CivicsyncKafkaConsumerLagHigh.",
           query(f"max by (group, topic, partition) (civicsync_kafka_consumer_lag_seconds{{{T}}})",
                 "{{group}} {{topic}}[{{partition}}]"),
           unit="s", limits=((None, "green"), (60, "red")), width=12),
        ts("Kafka consumer lag (records) by group", "Records on the topics no worker of the group has applied.",
           query(f"sum by (group) (civicsync_kafka_consumer_lag_records{{{T}}})", "{{group}}"), width=8),
        single("Kafka lag readable", "1 while the service cannot read the groups' lag (broker or target "
               "unreachable): the lag panels are not current. Runbook: CivicsyncKafkaLagUnknown.",
               query(f"max(civicsync_kafka_lag_sample_failed{{{T}}})", instant=True),
               limits=((None, "green"), (1, "red")), width=4),
    ]
    return with_panels(board, [("Lag and retained WAL", lag), ("Apply latency and throughput", latency),
                               ("Kafka consumer groups", kafka)])


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "sync-overview": sync_overview,
    "data-quality": data_quality,
    "consumer-lag": consumer_lag,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed JSON file differs")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the JSON files (default: this one)")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.out / f"{name}.json"
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run deploy/grafana/dashboards.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
