"""Red team (issue 9 items 1 and 6, issue 11 generality): a second department's event log: composite text
key (region, req_no), REPLICA IDENTITY FULL, a log table with no unique constraint (nothing to hide a
duplicate), its own names. In one batch: inserts, status changes, other-column updates, deletes, a
re-insert, a key change that also changes the status. The oracle is a trigger on the source."""

from __future__ import annotations

from typing import Any

from fidelity import create_pair, dead_letters, declare_pair
from fix_cdc import cdc_config, paused, started, wait_for
from fix_db import Deployment, q

COLUMNS = {"region": "text", "req_no": "text", "state": "text", "note": "text", "changed_at": "timestamptz"}
HISTORY = [
    "CREATE TABLE req_history (seq bigserial, region text, req_no text, state text, at timestamptz)",
    "CREATE FUNCTION req_hist() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state THEN"
    " INSERT INTO req_history (region, req_no, state, at) VALUES (NEW.region, NEW.req_no, NEW.state, NEW.changed_at);"
    " END IF; RETURN NULL; END $$",
    "CREATE TRIGGER req_hist AFTER INSERT OR UPDATE ON req FOR EACH ROW EXECUTE FUNCTION req_hist()",
]
SCRIPT = [
    "INSERT INTO req VALUES ('KA', 'a 1', 'NEW', 'x', clock_timestamp())",
    "UPDATE req SET state = 'OPEN', changed_at = clock_timestamp() WHERE req_no = 'a 1'",
    "UPDATE req SET note = 'y', changed_at = clock_timestamp() WHERE req_no = 'a 1'",
    "UPDATE req SET state = 'CLOSED', changed_at = clock_timestamp() WHERE req_no = 'a 1'",
    "DELETE FROM req WHERE req_no = 'a 1'",
    "INSERT INTO req VALUES ('KA', 'a 1', 'NEW', 'z', clock_timestamp())",
    "INSERT INTO req VALUES ('TN', 'b', 'NEW', 'x', clock_timestamp())",
    "UPDATE req SET req_no = 'b2', state = 'OPEN', changed_at = clock_timestamp() WHERE req_no = 'b'",
    "UPDATE req SET state = 'CLOSED', changed_at = clock_timestamp() WHERE req_no = 'b2'",
    "UPDATE req SET state = 'OPEN', changed_at = clock_timestamp() WHERE req_no = 'b2'",
    "DELETE FROM req WHERE req_no = 'b2'",
]


def _mutate(raw: dict[str, Any]) -> None:
    declare_pair("req", list(COLUMNS), ["region", "req_no"],
                 cdc={"event_log": {"table": "public.req_events", "on_change_of": "state",
                                    "columns": {"ev_region": "region", "ev_no": "req_no", "ev_state": "state",
                                                "ev_at": "changed_at"}, "position_column": "ev_lsn"}})(raw)
    raw["connections"]["warehouse"]["tables"]["public.req_events"] = {"key": ["ev_id"]}  # columns derived
    del raw["flows"]["req_batch"]


def _events(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT ev_region, ev_no, ev_state, ev_at::text FROM req_events ORDER BY 4, 1, 2, 3")


def _history(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "citizen", "SELECT region, req_no, state, at::text FROM req_history ORDER BY 4, 1, 2, 3")


def test_second_department_event_log_in_one_batch(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    create_pair(dep, "req", COLUMNS, types=False, identity_full=True)
    for db, table in (("citizen", "req"), ("warehouse", "req_copy")):
        q(dep, db, f"ALTER TABLE {table} ADD PRIMARY KEY (region, req_no)")
    q(dep, "warehouse", "CREATE TABLE req_events (ev_id bigserial PRIMARY KEY, ev_region text, ev_no text,"
                        " ev_state text, ev_at timestamptz, ev_lsn pg_lsn)")
    with dep.connect("citizen") as conn:
        for stmt in HISTORY:
            conn.execute(stmt.encode())
    config = cdc_config(dep, _mutate)
    with paused(config, "citizen", ["FX"]) as (worker, sizes):
        for stmt in SCRIPT:
            q(dep, "citizen", stmt)
        with started(worker):
            wait_for(lambda: len(_events(dep)) >= len(_history(dep)), timeout=15, what="the events")
            q(dep, "citizen", "UPDATE req SET state = 'OPEN', changed_at = clock_timestamp() WHERE req_no = 'a 1'")
            wait_for(lambda: len(_events(dep)) >= len(_history(dep)), timeout=15, what="a later event")
        assert sum(sizes) >= len(SCRIPT)  # every change came through the stream
    assert _events(dep) == _history(dep)
    assert q(dep, "warehouse", "SELECT region, req_no, state FROM req_copy") == [("KA", "a 1", "OPEN")]
    assert dead_letters(dep) == []
