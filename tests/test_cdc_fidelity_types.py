"""Issue 9 items 2 and 3: every type updates, and an update that only changes a value's text is applied.

Streaming and batch both merge through the same guard; after every update the target must hold
exactly the source's text output (compared column by column), and a re-run writes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicsync.config import LoadedConfig
from civicsync.jobs.batch import run_batch
from fidelity import create_pair, dead_letters, declare_pair, pair_config, texts
from fix_cdc import cdc_config, running, wait_for
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


def test_conflict_resolution_compares_types_without_equality(fresh_deployment: Deployment) -> None:
    """The field-ownership guards (apply/conflicts.py) compare text forms too (newest_wins, batch and CDC)."""
    dep = fresh_deployment
    columns = {"id": "int PRIMARY KEY", "j": "json", "p": "point", "x": "xml", "v": "timestamptz"}
    create_pair(dep, "own", columns, types=False)
    names = list(columns)

    def mutate(raw: dict[str, Any]) -> None:
        declare_pair("own", names, ["id"])(raw)
        for flow in ("own_stream", "own_batch"):
            raw["flows"][flow]["conflicts"] = {"version": {"source": "v", "target": "v"}, "default": "newest_wins"}

    config = cdc_config(dep, mutate)
    q(dep, "citizen", "INSERT INTO own VALUES (1, '{\"a\": 1}', '(1,1)', '<a/>', now() - interval '1 hour')")
    run_batch(config, "FB").raise_for_error()
    q(dep, "citizen", "UPDATE own SET j = '{\"a\": 2}', p = '(2,2)', x = '<b/>', v = now()")
    assert run_batch(config, "FB").raise_for_error().counts.rows_written == 1
    assert _same(dep, "own", names)
    assert run_batch(config, "FB").raise_for_error().counts.rows_written == 0
    with running(config, "citizen", ["FX"]):
        q(dep, "citizen", "UPDATE own SET j = '{\"a\": 3}', p = '(3,3)', v = now()")
        wait_for(lambda: _same(dep, "own", names), what="the streamed update")
    assert dead_letters(dep) == []


_REP_CONFIGS: dict[str, LoadedConfig] = {}
REP_COLUMNS = {"id": "int PRIMARY KEY", "n": "numeric", "na": "numeric[]", "jb": "jsonb", "f": "float8"}


@st.composite
def _two_forms(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """A number written two ways that '=' calls equal (scale, sign of zero); returns the numeric
    forms, then the float8 forms."""
    value = draw(st.decimals(min_value=-10**12, max_value=10**12, allow_nan=False, places=draw(st.integers(0, 6))))
    zeros_a, zeros_b = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    text = format(value, "f")
    dotted = text if "." in text else text + "."
    a, b = (dotted + "0" * zeros_a).rstrip("."), (dotted + "0" * zeros_b).rstrip(".")
    fa, fb = draw(st.sampled_from([("0", "-0"), ("-0", "0"), (a, b), ("1e300", "1E+300")]))
    return a, b, fa, fb


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forms=_two_forms())
def test_any_representation_change_reaches_the_target(deployment: Deployment,
                                                     forms: tuple[str, str, str, str]) -> None:
    dep = deployment
    if dep.citizen_db not in _REP_CONFIGS:  # one table and config per module deployment
        create_pair(dep, "rep", REP_COLUMNS, types=False)
        _REP_CONFIGS[dep.citizen_db] = pair_config(dep, "rep", list(REP_COLUMNS), ["id"])
    config = _REP_CONFIGS[dep.citizen_db]
    a, b, fa, fb = forms
    q(dep, "citizen", "DELETE FROM rep")
    q(dep, "citizen", "INSERT INTO rep VALUES (1, %s::numeric, ARRAY[%s::numeric], %s::jsonb, %s::float8)", a, a, a, fa)
    run_batch(config, "FB").raise_for_error()
    q(dep, "citizen", "UPDATE rep SET n = %s::numeric, na = ARRAY[%s::numeric], jb = %s::jsonb, f = %s::float8",
      b, b, b, fb)
    run_batch(config, "FB").raise_for_error()
    assert _same(dep, "rep", list(REP_COLUMNS))
    assert run_batch(config, "FB").raise_for_error().counts.rows_written == 0
