"""Red team (issue 9 items 1, 3 and 11): a key change that changes only the key's *representation*
(numeric 1.5 → 1.50, float8 0 → -0, a case-insensitive text key 'Asha' → 'ASHA'): the old and new keys
differ as text but are equal to PostgreSQL. The move must not delete the row it just wrote (the old key's
DELETE matches the new row), in streaming and in a dead letter's replay."""

from __future__ import annotations

import pytest

from fidelity import create_pair, dead_letters, pair_config, texts
from fix_cdc import running, wait_for
from fix_db import Deployment, q

CASES = {
    "numeric_scale": ("numeric", "1.5", "1.50"),
    "float_negative_zero": ("float8", "0", "-0"),
    "numeric_trailing_zeros": ("numeric", "2", "2.000"),
}


def _same(dep: Deployment) -> bool:
    cols = ["id", "v"]
    return texts(dep, "citizen", "eqk", cols) == texts(dep, "warehouse", "eqk_copy", cols)


@pytest.mark.parametrize("identity_full", [False, True], ids=["default_identity", "identity_full"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_representation_only_key_change_keeps_the_row(fresh_deployment: Deployment, case: str,
                                                        identity_full: bool) -> None:
    dep = fresh_deployment
    kind, old, new = CASES[case]
    create_pair(dep, "eqk", {"id": f"{kind} PRIMARY KEY", "v": "text"}, types=False, identity_full=identity_full)
    q(dep, "citizen", f"INSERT INTO eqk VALUES ('{old}'::{kind}, 'a'), ('7'::{kind}, 'b')")
    config = pair_config(dep, "eqk", ["id", "v"], ["id"])
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        q(dep, "citizen", f"UPDATE eqk SET id = '{new}'::{kind} WHERE id = '{old}'::{kind}")
        q(dep, "citizen", "UPDATE eqk SET v = 'c' WHERE v = 'b'")  # a later batch: the first has been applied
        wait_for(lambda: q(dep, "warehouse", "SELECT v FROM eqk_copy WHERE v = 'c'") == [("c",)], what="the marker")
        wait_for(lambda: _same(dep), timeout=5, what="the moved row")
    assert texts(dep, "warehouse", "eqk_copy", ["id", "v"]) == texts(dep, "citizen", "eqk", ["id", "v"])
    assert dead_letters(dep) == []


@pytest.mark.parametrize("identity_full", [False, True], ids=["default_identity", "identity_full"])
def test_a_replay_after_a_representation_only_key_change_keeps_the_row(fresh_deployment: Deployment,
                                                                       identity_full: bool) -> None:
    """The dead letter holds key '1.5'; meanwhile the source row's key became 1.50. The replay finds the
    row by numeric equality, and must not also treat key '1.5' as gone (deleting the live row)."""
    dep = fresh_deployment
    create_pair(dep, "eqk", {"id": "numeric PRIMARY KEY", "v": "text"}, types=False, identity_full=identity_full)
    q(dep, "warehouse", "ALTER TABLE eqk_copy ADD CONSTRAINT no_bad CHECK (v <> 'bad')")
    q(dep, "citizen", "INSERT INTO eqk VALUES (1.5, 'ok'), (7, 'other')")
    config = pair_config(dep, "eqk", ["id", "v"], ["id"])
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        q(dep, "citizen", "UPDATE eqk SET v = 'bad' WHERE id = 1.5")
        wait_for(lambda: dead_letters(dep), what="the dead letter")
        q(dep, "citizen", "UPDATE eqk SET id = 1.50, v = 'good' WHERE id = 1.5")  # representation-only key change
        wait_for(lambda: _same(dep), timeout=20, what="the retry to converge")
        q(dep, "citizen", "UPDATE eqk SET v = 'other2' WHERE id = 7")
        wait_for(lambda: q(dep, "warehouse", "SELECT v FROM eqk_copy WHERE id = 7") == [("other2",)], what="marker")
    assert texts(dep, "warehouse", "eqk_copy", ["id", "v"]) == [("1.50", "good"), ("7", "other2")]
