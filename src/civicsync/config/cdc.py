"""The config's change-data-capture rules: lifecycles, top-N per key, routed changes, event logs,
and a flow's ``cdc`` block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from civicsync.config.base import Model


class Lifecycle(Model):
    """Forward-only status: a change is applied only if it moves the target's ``column`` to a
    later stage. ``order`` lists stages from first to last; a nested list is one stage (moves
    within it are not forward). A ``final`` status never changes again."""

    column: str
    order: list[str | list[str]] = Field(min_length=2)
    final: list[str] = Field(default_factory=list)

    def ranks(self) -> dict[str, int]:
        """Status → stage number (1 = first)."""
        ranks: dict[str, int] = {}
        for i, stage in enumerate(self.order, start=1):
            for status in [stage] if isinstance(stage, str) else stage:
                ranks[status] = i
        return ranks


class OrderBy(Model):
    column: str
    desc: bool = False


class TopN(Model):
    """Keep the first ``n`` rows per partition (after filters), ranked by ``order_by``. Any change
    to a partition's source rows recomputes the whole partition in the target."""

    partition_by: list[str] | dict[str, str] = Field(
        min_length=1, description="source columns, mapped to the same-named target columns; or a mapping "
        "source column: target column (the target column must be mapped from that source column)")
    order_by: list[OrderBy] = Field(min_length=1)
    n: int = Field(ge=1, le=1000)
    rank_column: str = Field(description="target column receiving 1..n")

    @property
    def target_partition(self) -> list[str]:
        """The target columns holding the partition values, in partition_by's order."""
        if isinstance(self.partition_by, dict):
            return list(self.partition_by.values())
        return list(self.partition_by)


class RouteChanges(Model):
    """Target fields the source may not write directly: a differing value becomes a request row
    in ``table`` (for a person to verify) instead of an update."""

    fields: list[str] = Field(min_length=1, description="target columns (mapped by this flow)")
    table: str
    key_column: str | None = Field(
        default=None, description="request column receiving the row's key (single-column keys; or use key)")
    key: dict[str, str] | None = Field(
        default=None, min_length=1,
        description="request column: target key column, one entry per target key column (composite keys)")
    field_column: str = "field"
    old_column: str = "old_value"
    new_column: str = "new_value"
    time_column: str = Field(description="request column receiving the change's version time")
    status_column: str | None = Field(
        default="status", description="request column telling open requests apart (null: the table has none)")
    pending_value: str = Field(default="PENDING", description="status_column's value for an open request")

    @model_validator(mode="after")
    def _one_key_form(self) -> RouteChanges:
        if (self.key_column is None) == (self.key is None):
            raise ValueError("route_changes needs exactly one of key_column (a single-column key) and key "
                             "(request column: target key column)")
        return self

    def key_mapping(self, target_key: Sequence[str]) -> dict[str, str]:
        """Request column → target key column."""
        if self.key is not None:
            return dict(self.key)
        assert self.key_column is not None
        return {self.key_column: target_key[0]}


class EventLog(Model):
    """Append one row to ``table`` whenever the target's ``on_change_of`` column changes value.

    ``position_column`` names the event column that receives the change's source position (its
    LSN); older files wrote ``column: $lsn`` among ``columns`` (see :mod:`civicsync.config.legacy`).
    """

    table: str
    on_change_of: str
    columns: dict[str, str] = Field(min_length=1, description="event column: target column of the row")
    position_column: str | None = Field(
        default=None, description="event column receiving the change's source position (pg_lsn or text)")

    @model_validator(mode="after")
    def _position_not_mapped(self) -> EventLog:
        if self.position_column is not None and self.position_column in self.columns:
            raise ValueError(f"column {self.position_column!r} is both position_column and in columns; "
                             "keep it in one of them")
        return self

    @property
    def recorded(self) -> dict[str, str | None]:
        """Every event column → the target column it records, or None for the source position."""
        position = {} if self.position_column is None else {self.position_column: None}
        return {**self.columns, **position}


class Cdc(Model):
    """How a CDC flow applies change events."""

    write: Literal["upsert", "update_only"] = "upsert"
    deletes: Literal["apply", "ignore"] = "apply"
    truncate: Literal["propagate", "ignore"] = "ignore"
    on_missing_target: Literal["dead_letter", "skip"] = Field(
        default="skip", description="update_only: what to do when the target row does not exist (yet)")
    lifecycle: Lifecycle | None = None
    top_n: TopN | None = None
    route_changes: RouteChanges | None = None
    event_log: EventLog | None = None
