"""Red team (issue 9 item 1): key changes on a composite text key under REPLICA IDENTITY FULL with
unchanged TOAST values: swaps, cycles, a move onto a key deleted in the same batch, a move then a
delete, a move back and forth; in one batch (a paused worker) and across batches. After each step,
every column's text output of the target equals the source's."""

from __future__ import annotations

import pytest

from fidelity import create_pair, dead_letters, pair_config, texts
from fix_cdc import paused, running, started, wait_for
from fix_db import Deployment, q

COLUMNS = {"region": "text", "rno": "text", "small": "text", "big": "text", "bigj": "jsonb"}
BIG = "y" * 150_000


def _setup(dep: Deployment, identity_full: bool) -> None:
    create_pair(dep, "ck", COLUMNS, types=False, identity_full=identity_full)
    for db, table in (("citizen", "ck"), ("warehouse", "ck_copy")):
        q(dep, db, f"ALTER TABLE {table} ADD PRIMARY KEY (region, rno)")
        for col in ("big", "bigj"):
            q(dep, db, f"ALTER TABLE {table} ALTER COLUMN {col} SET STORAGE EXTERNAL")
    for i in range(1, 6):
        q(dep, "citizen", "INSERT INTO ck VALUES ('KA', %s, %s, %s, %s)",
          f"r {i}", f"s{i}", BIG + str(i), f'{{"b": "{BIG}{i}"}}')


def _same(dep: Deployment) -> bool:
    cols = list(COLUMNS)
    return texts(dep, "citizen", "ck", cols, "1, 2") == texts(dep, "warehouse", "ck_copy", cols, "1, 2")


# Each script runs in one source transaction. Keys hold spaces and mixed case (text keys).
SCRIPTS = {
    "swap": ["UPDATE ck SET rno = 'tmp' WHERE rno = 'r 1'", "UPDATE ck SET rno = 'r 1' WHERE rno = 'r 2'",
             "UPDATE ck SET rno = 'r 2' WHERE rno = 'tmp'"],
    "cycle_region": ["UPDATE ck SET region = 'TN' WHERE rno = 'r 3'",
                     "UPDATE ck SET region = 'KA' , rno = 'r 3b' WHERE rno = 'r 3'",
                     "UPDATE ck SET rno = 'r 3' WHERE rno = 'r 3b'"],
    "onto_deleted": ["DELETE FROM ck WHERE rno = 'r 4'", "UPDATE ck SET rno = 'r 4' WHERE rno = 'r 5'"],
    "move_then_delete": ["UPDATE ck SET rno = 'R 9' WHERE rno = 'r 4'", "DELETE FROM ck WHERE rno = 'R 9'"],
    "insert_move_update": ["INSERT INTO ck VALUES ('MH', 'n', 'new', repeat('z', 150000), '{}')",
                           "UPDATE ck SET region = 'mh' WHERE region = 'MH'",
                           "UPDATE ck SET small = NULL WHERE region = 'mh'"],
    "move_onto_moved_away": ["UPDATE ck SET rno = 'r 7' WHERE rno = 'r 1'",
                             "UPDATE ck SET rno = 'r 1' WHERE rno = 'r 5'",
                             "UPDATE ck SET small = 'was five' WHERE rno = 'r 1'"],
}


@pytest.mark.parametrize("identity_full", [True, False], ids=["identity_full", "default_identity"])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_key_changes_in_one_transaction(fresh_deployment: Deployment, script: str, identity_full: bool) -> None:
    dep = fresh_deployment
    _setup(dep, identity_full)
    config = pair_config(dep, "ck", list(COLUMNS), ["region", "rno"])
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        with dep.connect("citizen") as conn, conn.transaction():
            for stmt in SCRIPTS[script]:
                conn.execute(stmt)
        wait_for(lambda: _same(dep), timeout=20, what=f"{script}")
    assert dead_letters(dep) == []


def test_all_key_changes_in_one_batch_of_many_transactions(fresh_deployment: Deployment) -> None:
    """Every script as its own transaction, statement by statement, all waiting in the slot: one batch."""
    dep = fresh_deployment
    _setup(dep, True)
    config = pair_config(dep, "ck", list(COLUMNS), ["region", "rno"])
    with paused(config, "citizen", ["FX"]) as (worker, sizes):
        for name in ("swap", "cycle_region", "move_then_delete", "insert_move_update", "move_onto_moved_away"):
            for stmt in SCRIPTS[name]:
                q(dep, "citizen", stmt)
        with started(worker):
            wait_for(lambda: _same(dep), timeout=20, what="the batch")
        assert sizes and max(sizes) > 5
    assert dead_letters(dep) == []


def test_key_changes_across_batches(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    _setup(dep, True)
    config = pair_config(dep, "ck", list(COLUMNS), ["region", "rno"])
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _same(dep), what="the snapshot")
        for name in ("swap", "onto_deleted", "insert_move_update"):
            for stmt in SCRIPTS[name]:
                q(dep, "citizen", stmt)
                wait_for(lambda: _same(dep), timeout=20, what=stmt)
    assert dead_letters(dep) == []
