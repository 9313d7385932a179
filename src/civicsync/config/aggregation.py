"""The config's aggregation rule: a GROUP BY over one source table (joins, time buckets, measures)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from civicsync.config.base import Model
from civicsync.config.masking import Vocabulary


class Join(Model):
    """A LEFT JOIN of the source table to another table of the same database."""

    table: str
    alias: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    match: dict[str, str] = Field(min_length=1, description="source column: joined column")


class TimeBucket(Model):
    """Group rows by the UTC day of a timestamp column; recompute recent days on every run."""

    column: str
    bucket: Literal["day"] = "day"
    target: str = Field(description="target column holding the bucket")
    lookback_days: int = Field(default=2, ge=1, description="days recomputed to absorb late events")


class Dimension(Model):
    """A grouping column: a source column, or ``alias.column`` of the join."""

    column: str
    default: str | None = Field(default=None, description="value when NULL (e.g. no joined row)")
    vocabulary: Vocabulary | None = Field(default=None, description="declared values; any other becomes its default")


class Measure(Model):
    """An aggregate over the group."""

    fn: Literal["count", "count_distinct", "sum", "avg", "min", "max"]
    column: str | list[str] | None = Field(
        default=None, description="a column; count_distinct also takes a list (a composite key)")

    @model_validator(mode="after")
    def _column_needed(self) -> Measure:
        if self.fn != "count" and not self.column:
            raise ValueError(f"fn {self.fn} needs a column")
        if isinstance(self.column, list) and self.fn != "count_distinct":
            raise ValueError(f"fn {self.fn} takes one column; only count_distinct takes a list")
        return self

    @property
    def columns(self) -> list[str]:
        """The measured columns (one, or a composite key's)."""
        if self.column is None:
            return []
        return [self.column] if isinstance(self.column, str) else list(self.column)


class Aggregate(Model):
    """A daily aggregation: only group values and counts reach the target."""

    time: TimeBucket
    join: Join | None = None
    dimensions: dict[str, Dimension] = Field(default_factory=dict)
    measures: dict[str, Measure] = Field(min_length=1)
