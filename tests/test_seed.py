"""db seed: deterministic synthetic data that fits the reference schemas, streamed with COPY."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from civicsync.localpg import LocalPostgres
from civicsync.reference.seed import PROGRESS_EVERY, SeedCounts, seed
from fix_db import Deployment, new_deployment

CITIZENS = 300
TODAY = date(2026, 11, 20)

WAREHOUSE_TABLES = ("public.schemes", "public.citizen_profiles", "public.eligibility_predictions",
                    "public.profile_summaries", "public.application_decisions")
CITIZEN_TABLES = ("public.schemes", "public.citizens", "public.applications", "public.application_documents",
                  "public.user_events", "public.feedback")
# (connection, table, ORDER BY) for a digest of every seeded table
DIGESTED = (
    ("warehouse", "public.schemes", "scheme_id"), ("warehouse", "public.citizen_profiles", "citizen_id"),
    ("warehouse", "public.eligibility_predictions", "prediction_id"),
    ("warehouse", "public.profile_summaries", "citizen_id"),
    ("warehouse", "public.application_decisions", "decision_id"),
    ("citizen", "public.schemes", "scheme_id"), ("citizen", "public.citizens", "citizen_id"),
    ("citizen", "public.applications", "application_id"),
    ("citizen", "public.application_documents", "document_id"),
    ("citizen", "public.user_events", "event_id"), ("citizen", "public.feedback", "feedback_id"),
)

TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")
Seeded = tuple[Deployment, SeedCounts, list[tuple[str, int]]]


def _count(dep: Deployment, which: str, table: str) -> int:
    with dep.connect(which) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _column(conn: psycopg.Connection[tuple[object, ...]], query: str) -> list[object]:
    return [r[0] for r in conn.execute(query).fetchall()]


def _digest(dep: Deployment, which: str, table: str, order_by: str) -> str:
    with dep.connect(which) as conn:
        row = conn.execute(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY {order_by})) FROM {table} t").fetchone()
    assert row is not None
    return str(row[0])


def _digests(dep: Deployment) -> dict[str, str]:
    return {f"{which}.{table}": _digest(dep, which, table, key) for which, table, key in DIGESTED}


@pytest.fixture(scope="module")
def seeded(pg_server: LocalPostgres) -> Iterator[Seeded]:
    """One full seed of CITIZENS citizens (default today), with the progress calls it made."""
    dep = new_deployment(pg_server)
    calls: list[tuple[str, int]] = []
    try:
        counts = seed(dep.warehouse_dsn, dep.citizen_dsn, CITIZENS, seed=7,
                      progress=lambda table, n: calls.append((table, n)))
        yield dep, counts, calls
    finally:
        dep.drop()


def test_counts_are_plausible_and_reported(seeded: Seeded) -> None:
    dep, counts, calls = seeded
    expected_keys = {f"warehouse.{t}" for t in WAREHOUSE_TABLES} | {f"citizen.{t}" for t in CITIZEN_TABLES}
    assert set(counts.rows) == expected_keys
    for key, n in counts.rows.items():
        which, table = key.split(".", 1)
        assert _count(dep, which, table) == n, key
        assert sum(k for t, k in calls if t == key) == n, key
    assert all(0 < n <= PROGRESS_EVERY for _, n in calls)
    assert counts.seconds > 0 and counts.total == sum(counts.rows.values())

    rows = counts.rows
    portal = rows["citizen.public.citizens"]
    assert rows["warehouse.public.citizen_profiles"] == rows["warehouse.public.profile_summaries"] == CITIZENS
    assert rows["warehouse.public.schemes"] == 40
    with dep.connect("warehouse") as conn:
        published = _column(conn, "SELECT count(*) FROM schemes WHERE status <> 'DRAFT'")[0]
        statuses = set(_column(conn, "SELECT DISTINCT status FROM schemes"))
    assert statuses == {"ACTIVE", "DRAFT", "SUSPENDED", "CLOSED"}
    assert rows["citizen.public.schemes"] == published
    assert 0.75 * CITIZENS <= portal <= 0.95 * CITIZENS
    assert 2.5 * CITIZENS <= rows["warehouse.public.eligibility_predictions"] <= 3.5 * CITIZENS
    assert 0.3 * portal <= rows["citizen.public.applications"] <= 0.7 * portal
    assert 0 < rows["citizen.public.application_documents"] <= 3 * rows["citizen.public.applications"]
    assert 0 < rows["warehouse.public.application_decisions"] <= 4 * rows["citizen.public.applications"]
    assert 4 * portal <= rows["citizen.public.user_events"] <= 6 * portal
    assert 0.03 * portal <= rows["citizen.public.feedback"] <= 0.2 * portal


def test_references_hold_across_both_databases(
        seeded: Seeded) -> None:
    dep, _, _ = seeded
    with dep.connect("warehouse") as wh, dep.connect("citizen") as cz:
        profiles = set(_column(wh, "SELECT citizen_id FROM citizen_profiles"))
        assert set(_column(cz, "SELECT citizen_id FROM citizens")) <= profiles
        accounts = set(_column(cz, "SELECT citizen_id FROM citizens"))
        assert set(_column(cz, "SELECT citizen_id FROM user_events WHERE citizen_id IS NOT NULL")) <= accounts
        assert set(_column(cz, "SELECT citizen_id FROM feedback")) <= accounts
        apps = {r[0]: r[1:] for r in cz.execute(
            "SELECT application_id, citizen_id, scheme_id, status FROM applications").fetchall()}
        last = wh.execute(
            "SELECT DISTINCT ON (application_id) application_id, citizen_id, scheme_id, decision_code"
            " FROM application_decisions"
            " ORDER BY application_id, decided_at DESC, decision_id DESC").fetchall()
        predictions_per_pair = wh.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM eligibility_predictions"
            " GROUP BY citizen_id, scheme_id) x").fetchone()
    assert predictions_per_pair == (1,)
    status_of = {"RCVD": "SUBMITTED", "UNDER_REVIEW": "UNDER_REVIEW", "PEND_DOC": "DOCUMENTS_REQUIRED",
                 "APPR": "APPROVED", "REJ": "REJECTED", "DISB": "DISBURSED"}
    assert last
    for application_id, citizen_id, scheme_id, code in last:
        assert apps[application_id] == (citizen_id, scheme_id, status_of[code])
    assert {s for _, _, s in apps.values()} >= {"DRAFT", "WITHDRAWN", "APPROVED", "SUBMITTED"}


def test_values_look_real(seeded: Seeded) -> None:
    dep, _, _ = seeded
    with dep.connect("warehouse") as wh, dep.connect("citizen") as cz:
        ids = [str(v) for v in _column(wh, "SELECT national_id FROM citizen_profiles")]
        assert all(re.fullmatch(r"[2-9]\d{11}", i) for i in ids) and len(set(ids)) == len(ids)
        for conn, table in ((wh, "citizen_profiles"), (cz, "citizens")):
            for column, pattern in (("phone", r"[6-9]\d{9}"), ("pincode", r"\d{6}"),
                                    ("email", r"[a-z_.]+\d+@example\.in")):
                values = _column(conn, f"SELECT {column} FROM {table}")
                assert all(re.fullmatch(pattern, str(v)) for v in values), (table, column)
        states_per_district = _column(
            wh, "SELECT count(DISTINCT state) FROM citizen_profiles GROUP BY district")
        assert set(states_per_district) == {1}
        assert len(states_per_district) >= 20
        masked = dict(cz.execute("SELECT citizen_id, national_id_masked FROM citizens").fetchall())
        raw = dict(wh.execute("SELECT citizen_id, national_id FROM citizen_profiles").fetchall())
        scores = wh.execute(
            "SELECT min(score), max(score), count(DISTINCT status) FROM eligibility_predictions").fetchone()
        disabled = _column(wh, "SELECT avg(disability_status::int) FROM citizen_profiles")[0]
    assert all(m == f"XXXX-XXXX-{str(raw[c])[-4:]}" for c, m in masked.items())
    assert scores is not None and scores[2] == 4
    assert float(str(scores[0])) >= 0 and float(str(scores[1])) <= 1
    assert 0.0 < float(str(disabled)) < 0.15


def test_portal_copies_mix_synced_edited_and_stale_rows(
        seeded: Seeded) -> None:
    dep, _, _ = seeded
    with dep.connect("warehouse") as wh, dep.connect("citizen") as cz:
        fields = "full_name, phone, email, address_line, updated_at"
        registry = {r[0]: r[1:] for r in wh.execute(f"SELECT citizen_id, {fields} FROM citizen_profiles")}
        portal = {r[0]: r[1:] for r in cz.execute(f"SELECT citizen_id, {fields} FROM citizens")}
    same = newer = older = 0
    for citizen_id, (*values, updated) in portal.items():
        *source, source_updated = registry[citizen_id]
        if updated == source_updated:
            assert values == source
            same += 1
        elif updated > source_updated:
            assert values[1:] != source[1:], "a newer portal copy is a citizen's own edit"
            newer += 1
        else:
            older += 1
    assert newer >= 5 and older >= 2 and same >= 0.7 * len(portal)


def test_portal_never_holds_a_raw_national_id(
        seeded: Seeded) -> None:
    dep, _, _ = seeded
    with dep.connect("warehouse") as wh, dep.connect("citizen") as cz:
        national_ids = {str(v) for v in _column(wh, "SELECT national_id FROM citizen_profiles")}
        tables = ("citizens", "schemes", "application_documents", "user_events", "feedback")
        texts = [str(v) for table in tables for v in _column(cz, f"SELECT t::text FROM {table} t")]
        # Application forms carry the applicant's own id (for the application flows to mask); nothing else.
        texts += [str(v) for v in _column(cz, "SELECT (to_jsonb(t) - 'form_data')::text || ' '"
                                              " || (form_data - 'national_id')::text FROM applications t")]
        forms = cz.execute("SELECT a.citizen_id, a.form_data->>'national_id' FROM applications a").fetchall()
        own = dict(wh.execute("SELECT citizen_id, national_id FROM citizen_profiles").fetchall())
    assert len(texts) > CITIZENS
    assert not {m for text in texts for m in TWELVE_DIGITS.findall(text)} & national_ids
    assert forms and all(own[c] == form_id for c, form_id in forms)


def test_events_and_feedback_fall_on_the_seven_days_before_today(
        seeded: Seeded) -> None:
    dep, _, _ = seeded
    today = datetime.now(UTC).date()
    with dep.connect("citizen") as cz:
        cz.execute("SET TimeZone = 'UTC'")
        days = set(_column(cz, "SELECT DISTINCT occurred_at::date FROM user_events"))
        days |= set(_column(cz, "SELECT DISTINCT created_at::date FROM feedback"))
        anonymous = _column(cz, "SELECT avg((citizen_id IS NULL)::int) FROM user_events")[0]
        kinds = set(_column(cz, "SELECT DISTINCT event_type FROM user_events"))
    # (a seed run across midnight UTC may be one day behind)
    allowed = {today - timedelta(days=k) for k in range(1, 9)}
    assert days <= allowed and len(days) >= 6
    assert 0 < float(str(anonymous)) < 0.06
    assert kinds == {"login", "view_scheme", "start_application", "submit_application", "upload_document",
                     "logout"}


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def test_personal_data_in_comments_never_matches_stored_profile_values(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 3000, seed=11, today=TODAY)
    with dep.connect("warehouse") as wh, dep.connect("citizen") as cz:
        phones = {str(v) for v in _column(wh, "SELECT phone FROM citizen_profiles")}
        phones |= {str(v) for v in _column(cz, "SELECT phone FROM citizens")}
        emails = {str(v) for v in _column(wh, "SELECT email FROM citizen_profiles")}
        emails |= {str(v) for v in _column(cz, "SELECT email FROM citizens")}
        ids = {str(v) for v in _column(wh, "SELECT national_id FROM citizen_profiles")}
        comments = [str(c) if c is not None else "" for c in _column(cz, "SELECT comment FROM feedback")]
    found_phones = [m for c in comments for m in re.findall(r"(?<!\d)(?:\+91 |0)?\d{5}[ -]?\d{5}(?!\d)", c)]
    found_emails = [m for c in comments for m in re.findall(r"[\w.]+@[\w.]+\w", c)]
    found_ids = [m for c in comments for m in re.findall(r"(?<!\d)\d{4} ?\d{4} ?\d{4}(?!\d)", c)]
    with_pii = sum(1 for c in comments if re.search(r"@|\d{4}", c))
    assert 0.25 <= with_pii / len(comments) <= 0.55
    assert found_phones and found_emails and found_ids
    assert {p[:4] for p in found_phones} >= {"+91 ", "0600"} and any(re.fullmatch(r"\d{10}", p)
                                                                    for p in found_phones)
    assert any(" " in i for i in found_ids) and any(" " not in i for i in found_ids)
    assert not {_digits(p)[-10:] for p in found_phones} & phones
    assert not set(found_emails) & emails
    assert not {_digits(i) for i in found_ids} & ids


def test_same_seed_same_data_other_seed_other_data(pg_server: LocalPostgres) -> None:
    deployments = [new_deployment(pg_server) for _ in range(3)]
    try:
        for dep, s in zip(deployments, (5, 5, 6), strict=True):
            seed(dep.warehouse_dsn, dep.citizen_dsn, CITIZENS, seed=s, today=TODAY)
        first, second, other = (_digests(dep) for dep in deployments)
    finally:
        for dep in deployments:
            dep.drop()
    assert first == second
    assert all(v != other[k] for k, v in first.items())


def test_reseeding_replaces_the_data_and_leaves_civicsync_alone(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    first = seed(dep.warehouse_dsn, dep.citizen_dsn, CITIZENS, seed=3, today=TODAY)
    before = _digests(dep)
    with dep.connect("citizen") as cz:
        cz.execute("INSERT INTO eligibility_hints (citizen_id, scheme_id, rank, score_band) SELECT"
                   " citizen_id, (SELECT min(scheme_id) FROM schemes), 1, 'HIGH' FROM citizens LIMIT 3")
        cz.execute("INSERT INTO civicsync.watermarks (flow, value) VALUES ('feedback', 'x')")
    again = seed(dep.warehouse_dsn, dep.citizen_dsn, CITIZENS, seed=3, today=TODAY)
    assert again.rows == first.rows
    assert _digests(dep) == before
    assert _count(dep, "citizen", "eligibility_hints") == 0  # emptied by the cascade from citizens
    assert _count(dep, "citizen", "civicsync.watermarks") == 1


def test_a_failed_seed_changes_nothing(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, CITIZENS, seed=3, today=TODAY)
    before = _digests(dep)

    def fail_late(table: str, n: int) -> None:
        if table == "citizen.public.user_events":
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        seed(dep.warehouse_dsn, dep.citizen_dsn, 2 * CITIZENS, seed=4, today=TODAY, progress=fail_late)
    assert _digests(dep) == before


def test_only_profiles_seeds_just_schemes_and_profiles(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    counts = seed(dep.warehouse_dsn, dep.citizen_dsn, CITIZENS, only="profiles")
    assert counts.rows == {"warehouse.public.schemes": 40, "warehouse.public.citizen_profiles": CITIZENS}
    for table in WAREHOUSE_TABLES[2:]:
        assert _count(dep, "warehouse", table) == 0, table
    for table in CITIZEN_TABLES:
        assert _count(dep, "citizen", table) == 0, table
    # the same profiles as a full seed of the same size
    full = new_deployment(dep.server)
    try:
        seed(full.warehouse_dsn, full.citizen_dsn, CITIZENS)
        assert _digest(full, "warehouse", "citizen_profiles", "citizen_id") == \
            _digest(dep, "warehouse", "citizen_profiles", "citizen_id")
    finally:
        full.drop()


def test_rejects_bad_arguments_before_connecting() -> None:
    with pytest.raises(ValueError):
        seed("host=invalid.invalid", "host=invalid.invalid", 10, only="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        seed("host=invalid.invalid", "host=invalid.invalid", -1)
