"""Issue 9 items 2 and 3: every type updates, and an update that only changes a value's text is applied.

Streaming and batch both merge through the same guard; after every update the target must hold
exactly the source's text output (compared column by column), and a re-run writes nothing.
"""

from __future__ import annotations

import pytest

from civicsync.jobs.batch import run_batch
from fidelity import create_pair, dead_letters, pair_config, texts
from fix_cdc import running, wait_for
from fix_db import Deployment, q

# Types with no btree equality operator (and containers of them): '=' does not exist for them.
NO_EQUALITY = {
    "id": "int PRIMARY KEY", "j": "json", "x": "xml", "p": "point", "bx": "box", "ln": "line",
    "ls": "lseg", "pa": "path", "pg": "polygon", "c": "circle", "ja": "json[]", "pr": "pair", "jd": "jdoc",
}
FIRST = ("1, '{\"a\": 1}', '<a/>', '(1,2)', '(1,1),(0,0)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(1,1))',"
         " '((0,0),(1,0),(1,1))', '<(0,0),1>', ARRAY['{}'::json], ROW('[1]', '(3,4)', 1.5), '{\"d\": 1}'")
SECOND = ("j = '{\"a\": 2}', x = '<b/>', p = '(2,2)', bx = '(2,2),(0,0)', ln = '{1,-1,1}', ls = '[(0,0),(2,2)]',"
          " pa = '[(0,0),(2,2)]', pg = '((0,0),(2,0),(2,2))', c = '<(0,0),2>', ja = ARRAY['[]'::json],"
          " pr = ROW('[2]', '(5,6)', 1.5), jd = '{\"d\": 2}'")

# Representation-only changes: '=' calls old and new equal, their text differs.
REPRESENTATION = {"id": "int PRIMARY KEY", "n": "numeric", "f": "float8", "iv": "interval", "jb": "jsonb",
                  "na": "numeric[]", "pr": "pair"}
REPR_FIRST = "1, 1.5, 0, '30 days', '1.0', '{1.5,2}', ROW('{}', '(1,1)', 1.5)"
REPR_SECOND = "n = 1.50, f = '-0', iv = '1 mon', jb = '1.00', na = '{1.50,2.0}', pr = ROW('{}', '(1,1)', 1.50)"


def _same(dep: Deployment, name: str, columns: list[str]) -> bool:
    return texts(dep, "citizen", name, columns) == texts(dep, "warehouse", f"{name}_copy", columns)


@pytest.mark.parametrize(("columns", "first", "second"), [(NO_EQUALITY, FIRST, SECOND),
                                                         (REPRESENTATION, REPR_FIRST, REPR_SECOND)],
                         ids=["no_equality", "representation"])
def test_streamed_updates_arrive_exactly(fresh_deployment: Deployment, columns: dict[str, str], first: str,
                                         second: str) -> None:
    dep = fresh_deployment
    create_pair(dep, "fid", columns)
    names = list(columns)
    config = pair_config(dep, "fid", names, ["id"])
    with running(config, "citizen", ["FX"]):
        q(dep, "citizen", f"INSERT INTO fid VALUES ({first})")
        wait_for(lambda: _same(dep, "fid", names), what="the insert")
        q(dep, "citizen", f"UPDATE fid SET {second}")
        wait_for(lambda: _same(dep, "fid", names), what="the update")
    assert dead_letters(dep) == []


@pytest.mark.parametrize(("columns", "first", "second"), [(NO_EQUALITY, FIRST, SECOND),
                                                         (REPRESENTATION, REPR_FIRST, REPR_SECOND)],
                         ids=["no_equality", "representation"])
def test_batch_updates_arrive_exactly_and_a_rerun_writes_nothing(fresh_deployment: Deployment,
                                                                 columns: dict[str, str], first: str,
                                                                 second: str) -> None:
    dep = fresh_deployment
    create_pair(dep, "fid", columns)
    names = list(columns)
    config = pair_config(dep, "fid", names, ["id"])
    q(dep, "citizen", f"INSERT INTO fid VALUES ({first})")
    run_batch(config, "FB").raise_for_error()
    assert _same(dep, "fid", names)
    q(dep, "citizen", f"UPDATE fid SET {second}")
    assert run_batch(config, "FB").raise_for_error().counts.rows_written == 1
    assert _same(dep, "fid", names)
    assert run_batch(config, "FB").raise_for_error().counts.rows_written == 0  # idempotent: nothing to write
