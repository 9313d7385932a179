"""F2 profile pre-fill: masking, incremental watermark, field-ownership conflict resolution."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from civicsync.jobs.batch import run_batch
from fix_db import Deployment
from helpers import config_variant

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def add_profile(dep: Deployment, cid: str, nid: str, *, phone: str = "9876543210", name: str = "Asha Rao",
                age: str = "2 days", gender: str = "F") -> None:
    with dep.connect("warehouse") as conn:
        conn.execute(
            "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, gender, phone, email, district,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, 'asha@example.in', 'Pune', now() - %s::interval)",
            (cid, nid, name, gender, phone, age))


def warehouse(dep: Deployment, query: str, *args: Any) -> None:
    with dep.connect("warehouse") as conn:
        conn.execute(query, args)


def portal(dep: Deployment, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with dep.connect("citizen") as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def conflicts(dep: Deployment) -> list[tuple[Any, ...]]:
    return portal(dep, "SELECT row_key->>'citizen_id', field, policy, winner, source_version < target_version"
                       " FROM civicsync.conflicts ORDER BY conflict_id")


def test_first_run_masks_national_id_and_reruns_write_nothing(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012")
    add_profile(dep, B, "987654321098", phone="9123456789")
    first = run_batch(dep.config(), "F2").raise_for_error()
    assert (first.counts.rows_read, first.counts.rows_written) == (2, 2)
    rows = portal(dep, "SELECT citizen_id::text, national_id_masked, phone, profile_source FROM citizens ORDER BY 1")
    assert rows == [(A, "XXXX-XXXX-9012", "9876543210", "registry"), (B, "XXXX-XXXX-1098", "9123456789", "registry")]
    again = run_batch(dep.config(), "F2").raise_for_error()
    assert (again.counts.rows_read, again.counts.rows_written) == (0, 0)


def test_watermark_picks_up_only_changed_rows(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012")
    add_profile(dep, B, "987654321098")
    run_batch(dep.config(), "F2").raise_for_error()
    warehouse(dep, "UPDATE citizen_profiles SET district = 'Nashik', updated_at = now() WHERE citizen_id = %s", B)
    result = run_batch(dep.config(), "F2").raise_for_error()
    assert (result.counts.rows_read, result.counts.rows_written) == (1, 1)
    assert portal(dep, "SELECT district FROM citizens WHERE citizen_id = %s", B) == [("Nashik",)]
    with dep.connect("citizen") as conn:
        stored = conn.execute("SELECT value FROM civicsync.watermarks WHERE flow = 'profile_prefill'").fetchone()
    assert stored is not None and stored[0] == result.watermark


def _late_committer(dep: Deployment, cid: str, started: threading.Event, release: threading.Event) -> None:
    # A transaction that stamps its row with its start time (now()) but commits after a pre-fill ran.
    with psycopg.connect(dep.warehouse_dsn) as conn:
        conn.execute("UPDATE citizen_profiles SET district = 'Late', updated_at = now() WHERE citizen_id = %s",
                     (cid,))
        started.set()
        release.wait(30)
        conn.commit()


def run_with_late_commit(dep: Deployment, config: Any) -> tuple[int, int]:
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_late_committer, args=(dep, A, started, release))
    worker.start()
    started.wait(30)
    # Another row changes and commits while the late transaction is still open.
    warehouse(dep, "UPDATE citizen_profiles SET district = 'Early', updated_at = now() WHERE citizen_id = %s", B)
    during = run_batch(config, "F2").raise_for_error()
    release.set()
    worker.join()
    after = run_batch(config, "F2").raise_for_error()
    return during.counts.rows_read, after.counts.rows_read


def test_watermark_does_not_skip_rows_committed_late(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012")
    add_profile(dep, B, "987654321098")
    run_batch(dep.config(), "F2").raise_for_error()
    during, after = run_with_late_commit(dep, dep.config())
    # The guard holds the watermark below the open transaction: B is re-read next time, A is caught.
    assert during == 0 and after == 2
    assert portal(dep, "SELECT district FROM citizens ORDER BY citizen_id") == [("Late",), ("Early",)]


def test_without_the_guard_a_late_commit_is_skipped(fresh_deployment: Deployment) -> None:
    """The failure mode the guard exists for (so the test above can fail)."""
    dep = fresh_deployment
    add_profile(dep, A, "123456789012")
    add_profile(dep, B, "987654321098")

    def no_guard(raw: dict[str, Any]) -> None:
        raw["flows"]["profile_prefill"]["incremental"]["guard"] = "none"

    config = config_variant(dep.environ, no_guard)
    run_batch(config, "F2").raise_for_error()
    during, after = run_with_late_commit(dep, config)
    assert (during, after) == (1, 0)
    assert portal(dep, "SELECT district FROM citizens ORDER BY citizen_id") == [("Pune",), ("Early",)]


def test_portal_newer_edit_is_kept_and_conflicts_recorded(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012", phone="9876543210", name="Asha Rao", age="2 days")
    # The portal already had this citizen (no base yet) and the citizen edited phone and name later.
    portal(dep, "INSERT INTO citizens (citizen_id, full_name, phone, updated_at)"
                " VALUES (%s, 'Asha R.', '9000000001', now() - interval '1 day')", A)
    result = run_batch(dep.config(), "F2").raise_for_error()
    assert result.counts.conflicts == 2
    assert portal(dep, "SELECT full_name, phone FROM citizens") == [("Asha Rao", "9000000001")]
    assert conflicts(dep) == [(A, "full_name", "source_wins", "source", True),
                              (A, "phone", "newest_wins", "target", True)]


def test_older_portal_value_is_overwritten_without_conflict(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012", phone="9876543210", age="1 day")
    portal(dep, "INSERT INTO citizens (citizen_id, full_name, phone, updated_at)"
                " VALUES (%s, 'Asha Rao', '9000000001', now() - interval '5 days')", A)
    result = run_batch(dep.config(), "F2").raise_for_error()
    assert result.counts.conflicts == 0
    assert portal(dep, "SELECT phone FROM citizens") == [("9876543210",)]


def test_registry_change_to_another_field_never_reverts_a_citizen_edit(fresh_deployment: Deployment) -> None:
    """Three-way: the registry's phone has not changed since the last sync, so the citizen's
    phone stays even though the registry row as a whole is newer (a later full_name correction)."""
    dep = fresh_deployment
    add_profile(dep, A, "123456789012", phone="9876543210", age="3 days")
    run_batch(dep.config(), "F2").raise_for_error()
    portal(dep, "UPDATE citizens SET phone = '9000000001', updated_at = now()")
    warehouse(dep, "UPDATE citizen_profiles SET full_name = 'Asha Rao-Kulkarni', updated_at = now()")
    result = run_batch(dep.config(), "F2").raise_for_error()
    assert portal(dep, "SELECT full_name, phone FROM citizens") == [("Asha Rao-Kulkarni", "9000000001")]
    assert result.counts.conflicts == 0 and conflicts(dep) == []


def test_both_sides_changed_newest_wins(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012", phone="9876543210", age="5 days")
    add_profile(dep, B, "987654321098", phone="9876543211", age="5 days")
    run_batch(dep.config(), "F2").raise_for_error()
    # Each statement is its own transaction, so now() orders them.
    # A: citizen edits first, registry later → registry wins. B: registry first, citizen later → citizen wins.
    portal(dep, "UPDATE citizens SET phone = '9000000001', updated_at = now() WHERE citizen_id = %s", A)
    warehouse(dep, "UPDATE citizen_profiles SET phone = '9111111111', updated_at = now() WHERE citizen_id = %s", A)
    warehouse(dep, "UPDATE citizen_profiles SET phone = '9222222222', updated_at = now() WHERE citizen_id = %s", B)
    portal(dep, "UPDATE citizens SET phone = '9000000002', updated_at = now() WHERE citizen_id = %s", B)
    run_batch(dep.config(), "F2").raise_for_error()
    assert portal(dep, "SELECT phone FROM citizens ORDER BY citizen_id") == [("9111111111",), ("9000000002",)]
    assert conflicts(dep) == [(A, "phone", "newest_wins", "source", False),
                              (B, "phone", "newest_wins", "target", True)]


def test_rows_breaking_rules_are_dead_lettered_and_the_rest_applied(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    add_profile(dep, A, "123456789012", gender="F")
    add_profile(dep, B, "987654321098", gender="unknown")

    def strict_gender(raw: dict[str, Any]) -> None:
        raw["flows"]["profile_prefill"]["columns"]["gender"] = {"from": "gender", "map": {"F": "F", "M": "M"}}

    result = run_batch(config_variant(dep.environ, strict_gender), "F2").raise_for_error()
    assert (result.counts.rows_written, result.counts.rows_rejected) == (1, 1)
    assert portal(dep, "SELECT citizen_id::text FROM citizens") == [(A,)]
    [(key, kind, error)] = portal(dep, "SELECT row_key, error_kind, error FROM civicsync.dead_letters")
    assert key == {"citizen_id": B} and kind == "map"
    assert "unknown" not in error  # the value itself is never echoed


def test_batch_dead_letters_replay_after_the_source_is_fixed(fresh_deployment: Deployment, tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys

    import yaml

    from helpers import reference_raw

    dep = fresh_deployment
    add_profile(dep, A, "123456789012", gender="F")
    add_profile(dep, B, "987654321098", gender="unknown")
    raw = reference_raw()
    raw["flows"]["profile_prefill"]["columns"]["gender"] = {"from": "gender", "map": {"F": "F", "M": "M"}}
    path = tmp_path / "civicsync.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, **dep.environ, "CIVICSYNC_CONFIG": str(path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "civicsync.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    assert cli("batch", "run", "F2").returncode == 0
    [entry] = json.loads(cli("dlq", "list", "--json").stdout)
    assert entry["key"] == {"citizen_id": B} and entry["kind"] == "map"
    still = cli("dlq", "replay", "--flow", "F2")
    assert "replayed 0; still pending 1" in still.stdout, still.stdout + still.stderr
    warehouse(dep, "UPDATE citizen_profiles SET gender = 'M' WHERE citizen_id = %s", B)  # the fix (no new timestamp)
    fixed = cli("dlq", "replay", f"citizen:{entry['id']}")
    assert fixed.returncode == 0 and "replayed 1; still pending 0" in fixed.stdout, fixed.stdout + fixed.stderr
    assert portal(dep, "SELECT gender, national_id_masked FROM citizens WHERE citizen_id = %s", B) \
        == [("M", "XXXX-XXXX-1098")]
    assert portal(dep, "SELECT count(*) FROM citizens") == [(2,)]
