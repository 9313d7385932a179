"""Pydantic models of the civicsync config file.

Every rule a flow follows (column mappings, value maps, filters, masking, conflict policies,
validation, aggregation) is data in these models; the engine interprets them. Models forbid
unknown keys so a misspelt key is an error, not a silently ignored setting.

Cross-references (a flow naming a table, a column or a secret) are checked by
:mod:`civicsync.config.references` after the models load, so that every problem is listed at once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from civicsync.config.aggregation import Aggregate, Dimension, Join, Measure, TimeBucket
from civicsync.config.base import Model
from civicsync.config.cdc import Cdc, EventLog, Lifecycle, OrderBy, RouteChanges, TopN
from civicsync.config.kafka import KafkaSettings
from civicsync.config.masking import Audit, BandMask, DropMask, HmacMask, KeepLastMask, MaskSpec
from civicsync.config.service import Service
from civicsync.errors import UsageError

# Re-exported: the masking rules (config/masking.py), aggregation (config/aggregation.py) and CDC (config/cdc.py).
__all__ = ["Aggregate", "BandMask", "Cdc", "Dimension", "DropMask", "EventLog", "HmacMask", "Join", "KeepLastMask",
           "Lifecycle", "MaskSpec", "Measure", "Model", "OrderBy", "RouteChanges", "TimeBucket", "TopN"]


# --------------------------------------------------------------------------- connections & tables


class TableDecl(Model):
    """A table the config may use: its key and the columns flows may read or write.

    ``columns`` may be left out on a table civicsync only writes (a flow's target, an event log, a
    change-request table): the loader then derives them from what the config writes there
    (:mod:`civicsync.config.tables`). A table something reads (a flow's source, a lookup) lists them.
    """

    key: list[str] = Field(min_length=1)
    columns: list[str] = Field(
        default_factory=list,
        description="every column; may be left out on a write-only table (derived from what the flows write)")

    @model_validator(mode="after")
    def _key_is_a_column(self) -> TableDecl:
        if not self.columns:
            if "columns" in self.model_fields_set:
                raise ValueError("columns must list at least one column (or leave it out on a write-only table)")
            return self
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} are not in columns")
        return self


class Capture(Model):
    """Logical-replication settings of a connection that is the source of CDC flows."""

    slot: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                             description="default civicsync_<connection>")
    publication: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                                    description="default civicsync_<connection>")
    snapshot: Literal["initial", "never"] = Field(
        default="initial",
        description="copy the tables' current rows (consistently with the stream) when the slot is new")
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    batch_max_changes: int = Field(default=5000, ge=1)
    batch_max_wait_ms: int = Field(
        default=0, ge=0,
        description="how long to wait for more transactions once one arrived; 0 applies whatever the stream "
                    "already holds at once (under load, batches still grow while the previous one commits)")


class Connection(Model):
    """A database. The DSN comes from an environment variable, never from the file."""

    dsn_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$",
                         description="DSN of a role that may create schemas and roles (db init, batch runs)")
    capture_dsn_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$",
                                        description="DSN of the capture role (CDC reads); default: dsn_env")
    apply_dsn_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$",
                                      description="DSN of the apply role (CDC writes); default: dsn_env")
    batch_dsn_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$",
                                      description="DSN of the batch role (batch runs); default: dsn_env")
    reconcile_dsn_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$",
                                          description="DSN of the reconcile role; default: dsn_env")
    api_dsn_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$",
                                    description="DSN of the API role (its pooled sessions); default: dsn_env")
    capture: Capture = Field(default_factory=Capture)
    connect_timeout_seconds: int = Field(
        default=10, ge=2, le=600,
        description="give up on a server that does not answer within this (libpq's minimum is 2 s)")
    migrations: str | None = Field(
        default=None,
        description="'reference:NAME' for a bundled schema, or a folder of NNNN_*.sql relative to the config",
    )
    tables: dict[str, TableDecl] = Field(default_factory=dict)

    @field_validator("tables")
    @classmethod
    def _qualified_names(cls, tables: dict[str, TableDecl]) -> dict[str, TableDecl]:
        for name in tables:
            if name.count(".") != 1:
                raise ValueError(f"table {name!r} must be written as schema.table")
        return tables


class SecretRef(Model):
    """A secret read from the environment at load time (never written in the config)."""

    env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    min_length: int = 16


# --------------------------------------------------------------------------- column mappings


class ColumnSpec(Model):
    """How one target column gets its value. Exactly one of from / const / template / run_time."""

    from_: str | None = Field(default=None, alias="from")
    const: str | int | float | bool | None = None
    template: str | None = Field(default=None, description="'{col} text {other_col}' over source columns")
    run_time: bool = Field(default=False, description="the run's start time (e.g. synced_at)")
    map: dict[str, str | None] | None = Field(default=None, description="value map applied to the source value")
    default: str | None = Field(default=None, description="value for source values the map does not list")
    mask: MaskSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ColumnSpec:
        given = [
            n
            for n, v in (("from", self.from_), ("template", self.template), ("run_time", self.run_time or None))
            if v is not None
        ]
        if self.const is not None:
            given.append("const")
        if len(given) != 1:
            raise ValueError(f"give exactly one of from, const, template, run_time (got {given or 'none'})")
        if self.default is not None and self.map is None:
            raise ValueError("default only applies together with map")
        return self


# --------------------------------------------------------------------------- rules


FilterOp = Literal["eq", "ne", "in", "not_in", "is_null", "not_null", "gt", "gte", "lt", "lte"]


class Filter(Model):
    """Keep a source row only if ``column op value(s)`` holds (source columns, before mapping)."""

    column: str
    op: FilterOp
    value: str | int | float | None = None
    values: list[str | int | float] | None = None

    @model_validator(mode="after")
    def _operands(self) -> Filter:
        if self.op in ("in", "not_in"):
            if not self.values:
                raise ValueError(f"op {self.op} needs a non-empty 'values' list")
        elif self.op in ("is_null", "not_null"):
            if self.value is not None or self.values is not None:
                raise ValueError(f"op {self.op} takes no value")
        elif self.value is None:
            raise ValueError(f"op {self.op} needs a 'value'")
        return self


class Reference(Model):
    """Referential sanity: every non-null value of ``column`` must exist in ``table.ref_column``
    of the target database."""

    column: str
    table: str
    ref_column: str


class Validation(Model):
    """Checks made on the staged rows inside the target transaction, before commit."""

    min_rows: int = Field(default=0, ge=0)
    max_missing_ratio: float | None = Field(
        default=None, ge=0, le=1, description="full sync: refuse if more than this share of target rows vanish"
    )
    required: list[str] = Field(default_factory=list, description="target columns that may not be NULL")
    references: list[Reference] = Field(default_factory=list)
    max_rejected: int = Field(
        default=10_000, ge=0, description="fail the run if more source rows than this break the rules"
    )


ConflictPolicy = Literal["source_wins", "target_wins", "newest_wins"]


class VersionColumns(Model):
    """The columns whose values say how old each side's row is."""

    source: str
    target: str


class Conflicts(Model):
    """Field-ownership conflict resolution. A conflict is a field whose target value differs from
    the incoming one while the target row is newer than the source row; the policy decides it."""

    version: VersionColumns
    default: ConflictPolicy = "source_wins"
    fields: dict[str, ConflictPolicy] = Field(default_factory=dict)


class Incremental(Model):
    """Read only rows changed since the stored watermark.

    ``guard: in_flight_transactions`` keeps the new watermark below the start of any transaction
    still open on the source, so rows committed late with an older timestamp are not skipped
    (needs pg_read_all_stats or superuser on the source)."""

    column: str
    guard: Literal["in_flight_transactions", "none"] = "in_flight_transactions"


class SetValues(Model):
    """Soft-delete: set these target columns on rows that vanished from the source."""

    set: dict[str, str | int | float | bool | None] = Field(min_length=1)


OnMissing = Literal["keep", "delete"] | SetValues


class Retry(Model):
    """Exponential backoff for transient errors (connection loss, shutdown, serialization)."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=30.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)


class Retries(Model):
    """The event path's own retries (the defaults are the values that were built in before)."""

    target_commit: Retry = Field(
        default_factory=lambda: Retry(attempts=30, initial_delay=0.2, max_delay=10.0),
        description="committing a CDC batch while the target is down or a lock/statement times out")
    source_reconnect: Retry = Field(
        default_factory=lambda: Retry(attempts=100, initial_delay=0.2, max_delay=5.0),
        description="reconnecting the replication stream to the source")
    dead_letters: Retry = Field(
        default_factory=lambda: Retry(attempts=12, initial_delay=1.0, max_delay=300.0),
        description="the schedule of a CDC dead letter's replays (its last pause repeats)")


# --------------------------------------------------------------------------- flows


class Endpoint(Model):
    """One side of a flow: a connection name and a declared table."""

    connection: str
    table: str


class ReconcileSettings(Model):
    """How ``civicsync reconcile`` treats the flow, and whether it runs after each batch run."""

    after_batch: bool = Field(default=False, description="reconcile (and repair) after every batch run")
    repair: bool = Field(default=True, description="repair what the reconciliation after a batch run finds")
    ignore_columns: list[str] = Field(
        default_factory=list, description="target columns not compared (e.g. a time the sync itself stamps)")
    sample: int = Field(default=10, ge=0, le=1000, description="keys reported per class of difference")
    settle_seconds: float = Field(
        default=10.0, ge=0, le=600,
        description="event-path flows: how long a re-check waits for the CDC worker to apply what the source had "
                    "committed when it was read, so that changes in flight are not reported as differences")
    hmac_in_source: bool = Field(
        default=False,
        description="compute hmac pseudonyms inside the source database (pgcrypto) so the flow can be compared by "
                    "range checksums; the key then travels to the source as a query parameter and may appear in its "
                    "server logs. Off: such flows are compared by streaming the source through the chain")


class Flow(Model):
    """One data flow from a source table to a target table, with all its rules.

    ``kind: hybrid`` is a CDC flow (its ``cdc`` section) that is also run as an incremental batch on
    its ``schedule`` (its ``incremental`` section), catching what the event path missed. A batch
    flow with an ``incremental`` section is incremental, without one a full sync (there is no
    ``mode`` key: :mod:`civicsync.config.legacy` translates the old one).
    """

    id: str = Field(description="short id from the spec, e.g. F1")
    description: str = ""
    kind: Literal["batch", "aggregate", "cdc", "hybrid"]
    schedule: str | None = Field(default=None, description="cron expression, UTC")
    source: Endpoint
    target: Endpoint
    filters: list[Filter] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    incremental: Incremental | None = None
    on_missing: OnMissing = "keep"
    validate_: Validation = Field(default_factory=Validation, alias="validate")
    conflicts: Conflicts | None = None
    on_invalid_row: Literal["fail", "reject"] = "reject"
    retry: Retry = Field(default_factory=Retry)
    aggregate: Aggregate | None = None
    cdc: Cdc | None = None
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)

    @property
    def mode(self) -> Literal["full", "incremental"]:
        """'incremental' when the flow has an ``incremental`` section, else 'full' (read-only, derived)."""
        return "full" if self.incremental is None else "incremental"

    @property
    def streams(self) -> bool:
        """The flow has an event path (a CDC worker applies its changes)."""
        return self.kind in ("cdc", "hybrid")

    @property
    def batches(self) -> bool:
        """The flow has a batch path (``batch run`` and the scheduler run it)."""
        return self.kind in ("batch", "aggregate", "hybrid")

    @property
    def kafka_capable(self) -> bool:
        """The flow's event path can run on Kafka: an event-path flow without ``top_n`` (a top-N flow
        re-reads its source when a partition changes, and stays on the native path)."""
        return self.streams and self.cdc is not None and self.cdc.top_n is None

    @model_validator(mode="before")
    @classmethod
    def _default_cdc(cls, data: Any) -> Any:
        # An event-path flow with no settings of its own needs no cdc section (config/legacy.py warns about the
        # older 'cdc: {}').
        if isinstance(data, dict) and data.get("kind") in ("cdc", "hybrid") and data.get("cdc") is None:
            return {**data, "cdc": {}}
        return data

    @field_validator("columns", mode="before")
    @classmethod
    def _shorthand(cls, columns: Any) -> Any:
        # 'target_col: source_col' is shorthand for {from: source_col}
        if isinstance(columns, dict):
            return {k: ({"from": v} if isinstance(v, str) else v) for k, v in columns.items()}
        return columns

    @model_validator(mode="after")
    def _kind_rules(self) -> Flow:
        if self.kind == "aggregate":
            if self.aggregate is None:
                raise ValueError("kind aggregate needs an 'aggregate' section")
            if self.columns:
                raise ValueError("kind aggregate takes its columns from 'aggregate', not 'columns'")
        else:
            if self.aggregate is not None:
                raise ValueError("'aggregate' only applies to kind aggregate")
            if not self.columns:
                raise ValueError(f"a {self.kind} flow needs at least one entry in 'columns'")
        if self.streams != (self.cdc is not None):
            raise ValueError("only kinds cdc and hybrid take a 'cdc' section")
        if self.kind == "cdc":
            if self.incremental is not None or self.on_missing != "keep":
                raise ValueError("'incremental' and 'on_missing' do not apply to kind cdc")
            return self
        if self.kind == "hybrid":
            if self.incremental is None or self.schedule is None:
                raise ValueError("kind hybrid needs an 'incremental' section and a 'schedule'")
            if self.on_missing != "keep":
                raise ValueError("'on_missing' does not apply to kind hybrid")
            return self
        if self.kind == "aggregate" and self.incremental is not None:
            raise ValueError("'incremental' does not apply to kind aggregate (it recomputes its lookback window)")
        if self.on_missing != "keep" and self.incremental is not None:
            raise ValueError("on_missing only applies to a full sync (a flow without an 'incremental' section)")
        return self


class Roles(Model):
    """The least-privilege roles `db init` creates and grants: CDC capture and apply, batch runs,
    reconciliation, the HTTP API (see civicsync.provision.roles and civicsync.provision.work_roles)."""

    capture: str = Field(default="civicsync_capture", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    apply: str = Field(default="civicsync_apply", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    batch: str = Field(default="civicsync_batch", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    reconcile: str = Field(default="civicsync_reconcile", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    api: str = Field(default="civicsync_api", pattern=r"^[a-z_][a-z0-9_]{0,62}$")


class Config(Model):
    """The whole civicsync config file."""

    version: Literal[1]
    service: Service = Field(default_factory=Service)
    roles: Roles = Field(default_factory=Roles)
    origin: str = Field(default="civicsync", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                        description="replication origin marking civicsync's own writes (no echo loops)")
    connections: dict[str, Connection] = Field(min_length=1)
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    flows: dict[str, Flow] = Field(default_factory=dict)
    audit: Audit = Field(default_factory=Audit)
    kafka: KafkaSettings | None = None
    retries: Retries = Field(default_factory=Retries)

    def flow(self, name: str) -> Flow:
        """The flow called ``name`` (by config name or spec id, e.g. 'F2')."""
        if name in self.flows:
            return self.flows[name]
        for flow in self.flows.values():
            if flow.id.lower() == name.lower():
                return flow
        raise KeyError(name)

    def streaming_flows(self, source: str, only: list[str] | None = None) -> list[str]:
        """Names of the event-path flows reading from connection ``source`` (among ``only``: names or ids)."""
        return [n for n, f in self.flows.items() if f.streams and f.source.connection == source
                and (only is None or n in only or f.id in only)]

    def carried_by_kafka(self, name: str) -> bool:
        """With a ``kafka:`` section, the event path of flow ``name`` runs only on Kafka (``civicsync capture``
        or Debezium, then ``civicsync apply --group``), never on the native slot: one carrier per flow."""
        return self.kafka is not None and self.flows[name].kafka_capable

    def kafka_flows(self, only: list[str] | None = None) -> list[str]:
        """Names of the Kafka-carried flows (among ``only``: names or ids); none without a ``kafka:`` section."""
        return [n for n, f in self.flows.items() if self.carried_by_kafka(n)
                and (only is None or n in only or f.id in only)]

    def native_flows(self, source: str, only: list[str] | None = None) -> list[str]:
        """The event-path flows reading from ``source`` that the native path runs (its slot, ``cdc run``,
        ``civicsync run``'s workers): :meth:`streaming_flows` that are not carried by Kafka."""
        return [n for n in self.streaming_flows(source, only) if not self.carried_by_kafka(n)]

    def refuse_kafka_carried(self, only: list[str] | None, *, keep_batches: bool = False) -> None:
        """A :class:`UsageError` (CLI exit 2) when ``only`` names a Kafka-carried flow for the native path.
        ``keep_batches``: a hybrid flow named is fine (its batch path runs; its event path stays on Kafka)."""
        if not only:
            return  # nothing named: the native path just runs what is native
        named = [n for n in self.kafka_flows(only) if not (keep_batches and self.flows[n].batches)]
        if not named:
            return
        listed = ", ".join(f"{n} ({self.flows[n].id})" for n in named)
        sources = sorted({self.flows[n].source.connection for n in named})
        capture = " and ".join(
            "Debezium" if self.kafka is not None and s in self.kafka.debezium else f"`civicsync capture {s}`"
            for s in sources)
        raise UsageError(
            f"flow{'s' * (len(named) > 1)} {listed} {'are' if len(named) > 1 else 'is'} carried by Kafka (the config "
            f"has a kafka: section), not by the native CDC path: run `civicsync apply --group G"
            f"{''.join(f' --flow {self.flows[n].id}' for n in named)}` (fed by {capture}) instead")

    def flow_name(self, name: str) -> str:
        """The config name of the flow called ``name`` (by config name or spec id)."""
        if name in self.flows:
            return name
        for key, flow in self.flows.items():
            if flow.id.lower() == name.lower():
                return key
        raise KeyError(name)


def slot_name(config: Config, connection: str) -> str:
    """The replication slot civicsync uses on a source connection."""
    return config.connections[connection].capture.slot or f"civicsync_{connection}"


def kafka_slot_name(config: Config, connection: str) -> str:
    """The slot ``civicsync capture`` reads on a source connection (the native slot stays untouched)."""
    return f"{slot_name(config, connection)}_kafka"[:63]


def publication_name(config: Config, connection: str) -> str:
    """The publication civicsync uses on a source connection."""
    return config.connections[connection].capture.publication or f"civicsync_{connection}"
