"""Field-ownership conflict resolution, set-based, inside the merge transaction.

Policies per target field (config ``conflicts.fields``, default ``conflicts.default``):

``source_wins``
    The source's value is written. Recorded as a conflict when the target row is newer and differs.
``target_wins``
    The source only fills an empty field; a non-NULL target value is never overwritten.
``newest_wins``
    Three-way: civicsync remembers a hash of the source value it last synced for each field (the
    *base*, in ``civicsync.field_base``). If only the source changed since then, the source wins;
    if only the target changed (e.g. the citizen edited their phone), the target keeps its value;
    if both changed, the newer row (by the version columns) wins and the conflict is recorded.
    Without a base (a row the target had before civicsync first synced it) the newer row wins.

Decisions are made on the staged rows before the upsert: a staged field the target keeps is
overwritten with the target's value, so the upsert itself only ever copies staged values. Target
rows are locked first, so a concurrent edit cannot slip between decision and write.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from civicsync.config.models import ConflictPolicy, Conflicts

OLD_BASE = sql.Identifier("civicsync_base_old")
NEW_BASE = sql.Identifier("civicsync_base_new")


class ConflictResolver:
    """Resolves the staged rows of one flow against its target table."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        flow_name: str,
        conflicts: Conflicts,
        table: sql.Identifier,
        key: tuple[str, ...],
        columns: tuple[str, ...],
        stage: sql.Identifier,
    ) -> None:
        self._conn = conn
        self._stage = stage
        self._flow = flow_name
        self._table = table
        self._key = key
        self._version = conflicts.version.target
        self._policies: dict[str, ConflictPolicy] = {
            c: conflicts.fields.get(c, conflicts.default) for c in columns if c not in key and c != self._version
        }
        self._base_fields = [c for c, p in self._policies.items() if p == "newest_wins"]
        self._layout_checked = False
        self.existing = -1  # staged keys already in the target; known after resolve()
        self._fresh_rows = stage  # where save_bases reads the synced source values on a first sync

    # ------------------------------------------------------------------ SQL pieces

    def _row_key(self, alias: str) -> sql.Composable:
        if len(self._key) == 1:
            return sql.SQL('{}::text COLLATE "C"').format(sql.Identifier(alias, self._key[0]))
        return sql.SQL('jsonb_build_array({})::text COLLATE "C"').format(
            sql.SQL(", ").join(sql.Identifier(alias, k) for k in self._key))

    def _match(self) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("t", k), sql.Identifier("s", k)) for k in self._key)

    def _hashes(self, alias: str) -> sql.Composable:
        return sql.SQL("ARRAY[{}]::int4[]").format(sql.SQL(", ").join(
            sql.SQL("hashtext({}::text)").format(sql.Identifier(alias, c)) for c in self._base_fields))

    def _changed(self, alias: str, column: str) -> sql.Composable:
        """Has ``alias.column`` changed since the base was recorded?"""
        return sql.SQL("hashtext({}::text) IS DISTINCT FROM b.hashes[{}]").format(
            sql.Identifier(alias, column), sql.Literal(self._base_fields.index(column) + 1))

    def _target_newer(self) -> sql.Composable:
        return sql.SQL("{} > {}").format(sql.Identifier("t", self._version), sql.Identifier("s", self._version))

    def _differs(self, column: str) -> sql.Composable:
        # Text forms: json/xml/point have no '=', and 1.5 vs 1.50 is a change to carry.
        return sql.SQL("{}::text IS DISTINCT FROM {}::text").format(
            sql.Identifier("t", column), sql.Identifier("s", column))

    def _has_base(self, column: str) -> sql.Composable:
        return sql.SQL("b.hashes IS NOT NULL")

    def _is_conflict(self, column: str, policy: ConflictPolicy) -> sql.Composable:
        # Filling a field the target never had is not a conflict (without a base we cannot tell
        # a cleared field from one never filled, so NULL counts as never filled).
        differs = sql.SQL("{} AND {} IS NOT NULL").format(self._differs(column), sql.Identifier("t", column))
        if policy == "target_wins":
            return sql.SQL("({})").format(differs)
        if policy == "source_wins":
            return sql.SQL("({} AND {})").format(differs, self._target_newer())
        return sql.SQL("(CASE WHEN {hb} THEN {d0} AND {sc} AND {tc} ELSE {d} AND {newer} END)").format(
            d0=self._differs(column), d=differs, hb=self._has_base(column), sc=self._changed("s", column),
            tc=self._changed("t", column), newer=self._target_newer())

    def _winner(self, column: str, policy: ConflictPolicy) -> sql.Composable:
        if policy == "source_wins":
            return sql.Literal("source")
        if policy == "target_wins":
            return sql.Literal("target")
        return sql.SQL("CASE WHEN {} THEN 'target' ELSE 'source' END").format(self._target_newer())

    def _keeps_target(self, column: str, policy: ConflictPolicy) -> sql.Composable:
        if policy == "target_wins":
            return sql.SQL("{} IS NOT NULL").format(sql.Identifier("t", column))
        return sql.SQL(
            "({d} AND CASE WHEN {hb} THEN NOT {sc} OR ({tc} AND {newer}) ELSE {t} IS NOT NULL AND {newer} END)"
        ).format(d=self._differs(column), hb=self._has_base(column), sc=self._changed("s", column),
                 tc=self._changed("t", column), newer=self._target_newer(), t=sql.Identifier("t", column))

    # ------------------------------------------------------------------ steps

    def resolve(self, run_id: int | None) -> int:
        """Lock, record conflicts, and settle the staged rows. Returns the conflicts recorded."""
        if not self._policies:
            return 0
        row = self._conn.execute(sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {table} t JOIN {stage} s ON {match} FOR UPDATE OF t) x").format(
            table=self._table, stage=self._stage, match=self._match())).fetchone()
        self.existing = int(str(row[0])) if row else 0
        if self.existing == 0:
            return 0  # no staged key exists in the target yet: nothing to decide
        self._ensure_layout()
        self._load_bases()
        recorded = self._record(run_id)
        self._settle()
        return recorded

    def direct_load(self, table: sql.Identifier) -> None:
        """The rows were loaded straight into an empty target: nothing to decide, and the bases
        come from the target's rows (they are the source values just synced)."""
        self.existing = 0
        self._fresh_rows = table

    def _ensure_layout(self) -> None:
        if self._layout_checked or not self._base_fields:
            return
        row = self._conn.execute("SELECT fields FROM civicsync.field_base_layout WHERE flow = %s",
                                 (self._flow,)).fetchone()
        if row is None or list(row[0]) != self._base_fields:
            # The governed fields changed: old hashes no longer line up, so forget them.
            self._conn.execute("DELETE FROM civicsync.field_base WHERE flow = %s", (self._flow,))
            self._conn.execute(
                "INSERT INTO civicsync.field_base_layout (flow, fields) VALUES (%s, %s)"
                " ON CONFLICT (flow) DO UPDATE SET fields = excluded.fields", (self._flow, self._base_fields))
        self._layout_checked = True

    def _load_bases(self) -> None:
        # Old bases for the staged keys (read before anything changes), and the new ones (the
        # source values staged now) to store after the write.
        # Several flows (or keys, when a batch is isolated) may resolve in one transaction.
        self._conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(OLD_BASE, NEW_BASE))
        self._conn.execute(sql.SQL(
            "CREATE TEMP TABLE {old} ON COMMIT DROP AS SELECT b.row_key, b.hashes FROM civicsync.field_base b"
            " JOIN {stage} s ON b.flow = {flow} AND b.row_key = {rk}").format(
            old=OLD_BASE, stage=self._stage, flow=sql.Literal(self._flow), rk=self._row_key("s")))
        self._conn.execute(sql.SQL("ANALYZE {}").format(OLD_BASE))
        if self._base_fields:
            self._conn.execute(sql.SQL(
                "CREATE TEMP TABLE {new} ON COMMIT DROP AS SELECT {rk} AS row_key, {hashes} AS hashes"
                " FROM {stage} s").format(new=NEW_BASE, rk=self._row_key("s"), hashes=self._hashes("s"),
                                          stage=self._stage))

    def _joined(self) -> sql.Composable:
        return sql.SQL("{stage} s JOIN {table} t ON {match} LEFT JOIN {old} b ON b.row_key = {rk}").format(
            stage=self._stage, table=self._table, match=self._match(), old=OLD_BASE, rk=self._row_key("s"))

    def _record(self, run_id: int | None) -> int:
        entries = sql.SQL(", ").join(
            sql.SQL("({}, {}, {}, {})").format(
                sql.Literal(c), sql.Literal(p), self._is_conflict(c, p), self._winner(c, p))
            for c, p in self._policies.items())
        key_json = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier("s", k)) for k in self._key)
        cur = self._conn.execute(sql.SQL(
            "INSERT INTO civicsync.conflicts (flow, run_id, row_key, field, policy, source_version,"
            " target_version, winner)"
            " SELECT {flow}, {run}, jsonb_build_object({key_json}), f.field, f.policy, s.{v}, t.{v}, f.winner"
            " FROM {joined} CROSS JOIN LATERAL (VALUES {entries}) AS f(field, policy, is_conflict, winner)"
            " WHERE f.is_conflict").format(
            flow=sql.Literal(self._flow), run=sql.Literal(run_id), key_json=key_json,
            v=sql.Identifier(self._version), joined=self._joined(), entries=entries))
        return max(cur.rowcount, 0)

    def _settle(self) -> None:
        kept = [(c, p) for c, p in self._policies.items() if p != "source_wins"]
        if not kept:
            return
        sets = sql.SQL(", ").join(
            sql.SQL("{c} = CASE WHEN {keep} THEN {t} ELSE {s} END").format(
                c=sql.Identifier(c), keep=self._keeps_target(c, p), t=sql.Identifier("t", c),
                s=sql.Identifier("s", c))
            for c, p in kept)
        self._conn.execute(sql.SQL(
            "UPDATE {stage} s SET {sets} FROM {table} t LEFT JOIN {old} b ON b.row_key = {rk}"
            " WHERE {match}").format(stage=self._stage, sets=sets, table=self._table, old=OLD_BASE,
                                     rk=self._row_key("t"), match=self._match()))

    def save_bases(self) -> None:
        """Remember the source values just synced (call after the write)."""
        if not self._base_fields:
            return
        self._ensure_layout()
        if self.existing == 0:
            # First sync of these keys: the stage still holds the source values. Drop bases left
            # by rows the target has since lost, then one sorted plain insert (no ON CONFLICT).
            self._conn.execute(sql.SQL(
                "DELETE FROM civicsync.field_base b USING {stage} s WHERE b.flow = {flow} AND b.row_key = {rk}"
            ).format(stage=self._fresh_rows, flow=sql.Literal(self._flow), rk=self._row_key("s")))
            self._conn.execute(sql.SQL(
                "INSERT INTO civicsync.field_base (flow, row_key, hashes) SELECT {flow}, {rk}, {hashes}"
                " FROM {stage} s ORDER BY 2").format(
                flow=sql.Literal(self._flow), rk=self._row_key("s"), hashes=self._hashes("s"),
                stage=self._fresh_rows))
            return
        self._conn.execute(sql.SQL(
            "INSERT INTO civicsync.field_base (flow, row_key, hashes) SELECT {flow}, row_key, hashes FROM {new}"
            " ON CONFLICT (flow, row_key) DO UPDATE SET hashes = excluded.hashes"
            " WHERE civicsync.field_base.hashes IS DISTINCT FROM excluded.hashes").format(
            flow=sql.Literal(self._flow), new=NEW_BASE))

    def new_value(self, column: str, new: str = "excluded") -> sql.Composable:
        """The value the write gives ``column`` (staged values are already settled); ``new`` is
        the alias of the incoming row ('excluded' in an upsert, the stage in an update)."""
        if column == self._version:
            return sql.SQL("GREATEST({}, {})").format(sql.Identifier("t", column), sql.Identifier(new, column))
        return sql.Identifier(new, column)
