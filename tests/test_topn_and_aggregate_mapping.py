"""Issue 11 item 4: top_n.partition_by maps to differently named target columns; count_distinct takes a
composite key. A second department's names: ``scores.person_ref`` ranks into ``top_items.resident``."""

from __future__ import annotations

from typing import Any

import pytest

from civicsync.config.loader import parse_config
from civicsync.errors import ConfigError
from civicsync.jobs.batch import run_batch
from fix_cdc import cdc_config, running, wait_for
from fix_db import Deployment, q
from fix_flows import C2, day, setup_events
from helpers import config_variant, reference_raw

TOP = {"partition_by": {"person_ref": "resident"}, "order_by": [{"column": "score", "desc": True},
                                                                 {"column": "score_id"}],
       "n": 2, "rank_column": "rnk"}


def declare(raw: dict[str, Any], top: dict[str, Any] | None = None) -> None:
    raw["connections"]["warehouse"]["tables"]["public.scores"] = {
        "key": ["score_id"], "columns": ["score_id", "person_ref", "item", "score"]}
    raw["connections"]["citizen"]["tables"]["public.top_items"] = {"key": ["resident", "item"]}  # columns derived
    raw["flows"]["top_items"] = {
        "id": "R3", "kind": "cdc", "source": {"connection": "warehouse", "table": "public.scores"},
        "target": {"connection": "citizen", "table": "public.top_items"},
        "columns": {"resident": "person_ref", "item": "item"}, "cdc": {"top_n": top or TOP}}


def tops(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "citizen", "SELECT resident, rnk, item FROM top_items ORDER BY 1, 2")


def test_top_n_partitions_map_to_differently_named_target_columns(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    q(dep, "warehouse", "CREATE TABLE scores (score_id int PRIMARY KEY, person_ref int, item int, score numeric)")
    q(dep, "warehouse", "ALTER TABLE scores REPLICA IDENTITY FULL")
    q(dep, "citizen", "CREATE TABLE top_items (resident int, item int, rnk int, PRIMARY KEY (resident, item))")
    with running(cdc_config(dep, declare), "warehouse", ["R3"]):
        q(dep, "warehouse", "INSERT INTO scores VALUES (1, 1, 10, 0.9), (2, 1, 11, 0.8), (3, 1, 12, 0.7),"
                            " (4, 2, 10, 0.5), (5, 2, 13, 0.6)")
        wait_for(lambda: tops(dep) == [(1, 1, 10), (1, 2, 11), (2, 1, 13), (2, 2, 10)], what="the first ranks")
        q(dep, "warehouse", "UPDATE scores SET person_ref = 2, score = 0.95 WHERE score_id = 1")  # moves partition
        wait_for(lambda: tops(dep) == [(1, 1, 11), (1, 2, 12), (2, 1, 10), (2, 2, 13)], what="both partitions")
        q(dep, "warehouse", "DELETE FROM scores WHERE person_ref = 1")
        wait_for(lambda: tops(dep) == [(2, 1, 10), (2, 2, 13)], what="the emptied partition")


ENV = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c", "CIVICSYNC_PSEUDONYM_KEY": "k" * 32}


def test_validate_rejects_a_partition_the_target_column_does_not_copy() -> None:
    raw = reference_raw()
    declare(raw, {**TOP, "partition_by": {"person_ref": "item"}})
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV)
    assert any("copied unchanged to target column 'item'" in str(p) for p in info.value.problems)


def test_count_distinct_takes_a_composite_key(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    setup_events(dep)
    with dep.connect("citizen") as conn:  # another citizen's session with the same session id
        conn.execute("INSERT INTO user_events (event_id, citizen_id, session_id, event_type, occurred_at,"
                     " duration_ms) VALUES (8, %s, 's1', 'login', %s, 100)", (C2, day(1)))

    def composite(raw: dict[str, Any]) -> None:
        measures = raw["flows"]["user_behaviour"]["aggregate"]["measures"]
        measures["sessions"] = {"fn": "count_distinct", "column": ["citizen_id", "session_id"]}

    config = config_variant(dep.environ, composite)
    run_batch(config, "F11").raise_for_error()
    rows = q(dep, "warehouse", "SELECT district, event_type, sessions FROM analytics.user_behavior_daily"
                               " WHERE day = %s ORDER BY 1, 2", day(1).date())
    # Nagpur: C2's s3 and C2's s1 (not C1's s1); Pune: C1's s1, s2; anonymous sessions have no full key.
    assert rows == [("Nagpur", "login", 2), ("Pune", "login", 2), ("Pune", "view_scheme", 1),
                    ("UNKNOWN", "login", 0)]


def test_a_list_of_columns_is_only_for_count_distinct() -> None:
    raw = reference_raw()
    raw["flows"]["user_behaviour"]["aggregate"]["measures"]["sessions"] = {"fn": "sum", "column": ["a", "b"]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf.yaml", ENV)
    assert "only count_distinct takes a list" in str(info.value)
