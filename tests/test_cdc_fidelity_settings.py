"""Issue 9 item 4: the same target rows whatever the source server's text-output defaults.

Both databases live on a second server whose postgresql.conf sets DateStyle 'SQL, DMY',
IntervalStyle sql_standard, extra_float_digits 0, another TimeZone and bytea_output escape. Rows go
through the initial snapshot, streaming and a re-read (dead-letter replay path), and must come out
exactly as on the source, compared at full precision.
"""

from __future__ import annotations

from civicsync.jobs.batch import run_batch
from fidelity import any_deployment_fixture, create_pair, dead_letters, odd_server_fixture, pair_config, texts
from fix_cdc import running, wait_for
from fix_db import Deployment, q

FIXTURES = (any_deployment_fixture, odd_server_fixture)  # used by name

COLUMNS = {"id": "int PRIMARY KEY", "d": "date", "ts": "timestamp", "tz": "timestamptz", "iv": "interval",
           "f8": "float8", "f4": "real", "b": "bytea", "m": "money", "t": "timetz", "dr": "daterange",
           "fa": "float8[]"}
ROWS = ["1, '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 23:30:00+00', '1 year 2 mons -3 days 04:05:06',"
        " 1.7976931348623157e308, 3.4028235e38, '\\x00ff5c27', 1234.56, '12:00+05:30', '[2024-02-29,2024-03-01)',"
        " '{0.1,2.2250738585072014e-308}'",
        "2, '0044-03-15 BC', 'infinity', '-infinity', '-1 days +00:00:00.000001', 0.30000000000000004, 1.1,"
        " '\\x', -0.01, '00:00-12', 'empty', '{-0}'"]
MORE = ("3, '1999-12-31', '1999-12-31 23:59:59', '1999-12-31 23:59:59+05:30', '1 mon', 1e-320, -0, '\\x0a',"
        " 0, '23:59:59.999999+14', '(,)', '{NaN,Infinity}'")


def _same(dep: Deployment) -> bool:
    cols = list(COLUMNS)
    return texts(dep, "citizen", "odd", cols) == texts(dep, "warehouse", "odd_copy", cols)


def test_snapshot_and_stream_give_the_source_rows_whatever_the_server_defaults(
        any_deployment: Deployment) -> None:
    dep = any_deployment
    create_pair(dep, "odd", COLUMNS, types=False)
    for row in ROWS:
        q(dep, "citizen", f"INSERT INTO odd VALUES ({row})")
    config = pair_config(dep, "odd", list(COLUMNS), ["id"])
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        q(dep, "citizen", f"INSERT INTO odd VALUES ({MORE})")
        q(dep, "citizen", "UPDATE odd SET f8 = f8 / 3, d = d + 1, iv = iv * 2, b = b || '\\x01'::bytea WHERE id = 1")
        wait_for(lambda: _same(dep) and len(texts(dep, "warehouse", "odd_copy", ["id"])) == 3, what="the stream")
    assert dead_letters(dep) == []


def test_batch_gives_the_source_rows_whatever_the_server_defaults(any_deployment: Deployment) -> None:
    dep = any_deployment
    create_pair(dep, "odd", COLUMNS, types=False)
    for row in [*ROWS, MORE]:
        q(dep, "citizen", f"INSERT INTO odd VALUES ({row})")
    config = pair_config(dep, "odd", list(COLUMNS), ["id"])
    run_batch(config, "FB").raise_for_error()
    assert _same(dep)
    assert run_batch(config, "FB").raise_for_error().counts.rows_written == 0
