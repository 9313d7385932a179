"""Issue 11 item 1: route_changes for a second department's tables, names and status codes.

A registry keyed by (region_code, resident_no) gets portal edits through an F5-like flow: the
mobile is the citizen's to change, the family name becomes a request row in the department's
own queue table (its own key columns, status column and open value). Requests land on exactly
the edited person, once; the allowed change is not held back.
"""

from __future__ import annotations

from typing import Any

import pytest

from civicsync.config.loader import parse_config
from civicsync.errors import ConfigError
from fix_cdc import cdc_config, running, wait_for
from fix_db import Deployment, q
from helpers import reference_raw

PEOPLE = ("region_code text, resident_no bigint, family_name text, mobile text, updated_at timestamptz,"
          " PRIMARY KEY (region_code, resident_no)")
QUEUE = ("req_no bigserial PRIMARY KEY, region text NOT NULL, person_no bigint NOT NULL, what text, was text,"
         " wants text, asked_at timestamptz, state text NOT NULL DEFAULT 'OPEN'")
COLUMNS = ["region_code", "resident_no", "family_name", "mobile", "updated_at"]
ROUTE = {"fields": ["family_name"], "table": "public.name_requests",
         "key": {"region": "region_code", "person_no": "resident_no"},
         "field_column": "what", "old_column": "was", "new_column": "wants", "time_column": "asked_at",
         "status_column": "state", "pending_value": "OPEN"}


def declare(raw: dict[str, Any], route: dict[str, Any] | None = None) -> None:
    raw["connections"]["citizen"]["tables"]["public.people"] = {"key": ["region_code", "resident_no"],
                                                                "columns": COLUMNS}
    # Written only: their columns are derived from the flow and its route_changes.
    raw["connections"]["warehouse"]["tables"]["public.registry_people"] = {"key": ["region_code", "resident_no"]}
    raw["connections"]["warehouse"]["tables"]["public.name_requests"] = {"key": ["req_no"]}
    raw["flows"]["registry_updates"] = {
        "id": "R5", "kind": "cdc", "source": {"connection": "citizen", "table": "public.people"},
        "target": {"connection": "warehouse", "table": "public.registry_people"},
        "columns": {c: c for c in COLUMNS},
        "conflicts": {"version": {"source": "updated_at", "target": "updated_at"}, "default": "newest_wins"},
        "cdc": {"write": "update_only", "deletes": "ignore", "route_changes": route or ROUTE}}


def requests(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT region, person_no, what, was, wants, state FROM name_requests ORDER BY req_no")


def test_composite_key_requests_reach_exactly_the_edited_person(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    q(dep, "citizen", f"CREATE TABLE people ({PEOPLE})")
    q(dep, "warehouse", f"CREATE TABLE registry_people ({PEOPLE})")
    q(dep, "warehouse", f"CREATE TABLE name_requests ({QUEUE})")
    for db, table in (("citizen", "people"), ("warehouse", "registry_people")):
        q(dep, db, f"INSERT INTO {table} VALUES ('R1', 1, 'Rao', '900', now() - interval '1 day'),"
                   " ('R1', 2, 'Iyer', '901', now() - interval '1 day'), ('R2', 1, 'Das', '902', now() - interval"
                   " '1 day')")
    config = cdc_config(dep, declare)
    with running(config, "citizen", ["R5"]):
        q(dep, "citizen", "UPDATE people SET family_name = 'Rao-Menon', mobile = '999', updated_at = now()"
                          " WHERE region_code = 'R1' AND resident_no = 1")
        wait_for(lambda: requests(dep) == [("R1", 1, "family_name", "Rao", "Rao-Menon", "OPEN")],
                 what="one request for R1/1")
        wait_for(lambda: q(dep, "warehouse", "SELECT mobile FROM registry_people WHERE region_code = 'R1'"
                                             " AND resident_no = 1") == [("999",)], what="the allowed change")
        q(dep, "citizen", "UPDATE people SET mobile = '998', updated_at = now() WHERE resident_no = 1"
                          " AND region_code = 'R1'")  # the name still differs: the open request is not repeated
        wait_for(lambda: q(dep, "warehouse", "SELECT mobile FROM registry_people WHERE region_code = 'R1'"
                                             " AND resident_no = 1") == [("998",)], what="the second change")
        q(dep, "warehouse", "UPDATE name_requests SET state = 'DONE'")
        q(dep, "citizen", "UPDATE people SET family_name = 'Das-Roy', updated_at = now() WHERE region_code = 'R2'")
        wait_for(lambda: len(requests(dep)) == 2, what="the second person's request")
    assert requests(dep) == [("R1", 1, "family_name", "Rao", "Rao-Menon", "DONE"),
                             ("R2", 1, "family_name", "Das", "Das-Roy", "OPEN")]
    assert q(dep, "warehouse", "SELECT region_code, resident_no, family_name, mobile FROM registry_people"
                               " ORDER BY 1, 2") == [("R1", 1, "Rao", "998"), ("R1", 2, "Iyer", "901"),
                                                     ("R2", 1, "Das", "902")]


ENV = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c", "CIVICSYNC_PSEUDONYM_KEY": "k" * 32}


def problems(route: dict[str, Any]) -> list[str]:
    raw = reference_raw()
    declare(raw, route)
    # Declared explicitly here, so that a route naming a column the table lacks is caught at load.
    raw["connections"]["warehouse"]["tables"]["public.name_requests"]["columns"] = [
        "req_no", "region", "person_no", "what", "was", "wants", "asked_at", "state"]
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV)
    return [str(p) for p in info.value.problems]


DROP = "<drop>"


@pytest.mark.parametrize(("change", "expected"), [
    ({"key": DROP, "key_column": "region"}, "has a composite key (region_code, resident_no)"),
    ({"key": {"region": "region_code"}}, "must map each key column"),
    ({"key": {"region": "region_code", "person_no": "resident_no"}, "key_column": "region"}, "exactly one of"),
    ({"status_column": "status"}, "column 'status' is not declared in public.name_requests"),
    ({"status_column": None}, "pending_value"),
    ({"key": {"nope": "region_code", "person_no": "resident_no"}}, "column 'nope' is not declared"),
    ({"fields": ["region_code"]}, "part of the target's key"),
])
def test_validate_rejects_what_route_changes_cannot_do(change: dict[str, Any], expected: str) -> None:
    route = {k: v for k, v in {**ROUTE, **change}.items() if v != DROP}
    found = problems(route)
    assert any(expected in p for p in found), found


def test_a_queue_without_a_status_column(fresh_deployment: Deployment) -> None:
    """status_column: null — a request is open while it exists; the same edit is not queued twice."""
    dep = fresh_deployment
    q(dep, "citizen", f"CREATE TABLE people ({PEOPLE})")
    q(dep, "warehouse", f"CREATE TABLE registry_people ({PEOPLE})")
    q(dep, "warehouse", f"CREATE TABLE name_requests ({QUEUE.rsplit(', state', 1)[0]})")
    for db, table in (("citizen", "people"), ("warehouse", "registry_people")):
        q(dep, db, f"INSERT INTO {table} VALUES ('R1', 1, 'Rao', '900', now() - interval '1 day')")

    def no_status(raw: dict[str, Any]) -> None:
        declare(raw, {**{k: v for k, v in ROUTE.items() if k != "pending_value"}, "status_column": None})

    with running(cdc_config(dep, no_status), "citizen", ["R5"]):
        q(dep, "citizen", "UPDATE people SET family_name = 'Rao-Menon', updated_at = now()")
        wait_for(lambda: q(dep, "warehouse", "SELECT region, person_no, wants FROM name_requests")
                 == [("R1", 1, "Rao-Menon")], what="the request")
        q(dep, "citizen", "UPDATE people SET mobile = '999', updated_at = now()")
        wait_for(lambda: q(dep, "warehouse", "SELECT mobile FROM registry_people") == [("999",)], what="the mobile")
    assert q(dep, "warehouse", "SELECT count(*) FROM name_requests") == [(1,)]
