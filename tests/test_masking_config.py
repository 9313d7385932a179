"""Issue 10.1-10.4 in the config: masking declarations are validated at load with clear paths, and the
categorical dimensions of the F11 aggregate pass only their vocabulary (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from civicsync.errors import ConfigError
from civicsync.jobs.batch import run_batch
from fix_db import Deployment, q
from helpers import config_variant

ENV = {"CIVICSYNC_WAREHOUSE_DSN": "x", "CIVICSYNC_CITIZEN_DSN": "y", "CIVICSYNC_PSEUDONYM_KEY": "0123456789abcdef01"}


def _comment_mask(raw: dict[str, Any]) -> dict[str, Any]:
    mask: dict[str, Any] = raw["flows"]["feedback"]["columns"]["comment"]["mask"]
    return mask


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda m: m["known_values"].update(table="public.nowhere"),
     "flows.feedback.columns.comment.mask.known_values.table", "not declared"),
    (lambda m: m["known_values"].update(match={"citizen": "citizen_id"}),
     "flows.feedback.columns.comment.mask.known_values.match", "'citizen' is not declared in source table"),
    (lambda m: m["known_values"].update(columns=["phone", "aadhaar"]),
     "flows.feedback.columns.comment.mask.known_values.columns", "'aadhaar' is not declared in public.citizens"),
    # (pydantic names the mask kind in the path: 'mask.redact.' is the redact mask of the column)
    (lambda m: m.update(region="India"), "flows.feedback.columns.comment.mask.redact.region", "phone region"),
    (lambda m: m.update(phone_leniency="loose"), "flows.feedback.columns.comment.mask.redact.phone_leniency", ""),
    (lambda m: m.update(national_id={"lengths": [4]}),
     "flows.feedback.columns.comment.mask.redact.national_id.lengths", "between 6 and 32"),
])
def test_bad_redaction_declarations_name_the_path(change: Any, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_variant(ENV, lambda raw: change(_comment_mask(raw)))
    text = str(info.value)
    assert f"variant.yaml: {path}" in text and message in text, text


def test_bad_json_and_vocabulary_declarations_are_rejected() -> None:
    def json_mask(raw: dict[str, Any]) -> None:
        raw["flows"]["application_submissions"]["columns"]["form_data"]["mask"]["paths"]["a..b"] = "keep"
        raw["flows"]["application_submissions"]["columns"]["form_data"]["mask"]["undeclared"] = "pass"
        raw["flows"]["document_metadata"]["columns"]["doc_type"]["mask"]["aliases"] = {"x": "NOT_A_VALUE"}
        raw["audit"] = {"pii": {"schedule": "every day"}}
    with pytest.raises(ConfigError) as info:
        config_variant(ENV, json_mask)
    text = str(info.value)
    for fragment in ("form_data.mask.json.paths", "empty segment", "form_data.mask.json.undeclared",
                     "doc_type.mask.vocabulary", "not among values"):
        assert fragment in text, text
    with pytest.raises(ConfigError, match=r"audit\.pii\.schedule"):
        config_variant(ENV, lambda raw: raw.update(audit={"pii": {"schedule": "every day"}}))


def test_free_text_never_becomes_an_analytics_group(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    people = [("00000000-0000-4000-8000-000000000001", "Pune"),
              ("00000000-0000-4000-8000-000000000002", "near temple, call 98765 43210"),
              ("00000000-0000-4000-8000-000000000003", " pune ")]
    for cid, district in people:
        q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, district) VALUES (%s, 'A', %s)", cid, district)
    for i, (cid, _) in enumerate(people):
        for j, kind in enumerate(["login", "asha.k@mail.in clicked"]):
            q(dep, "citizen", "INSERT INTO user_events (event_id, citizen_id, session_id, event_type, occurred_at,"
                              " duration_ms) VALUES (%s, %s, 's', %s, %s, 10)", 10 * i + j, cid, kind, noon)
    run_batch(dep.config(), "F11").raise_for_error()
    groups = q(dep, "warehouse", "SELECT district, event_type, events FROM analytics.user_behavior_daily ORDER BY 1, 2")
    assert groups == [("OTHER", "login", 1), ("OTHER", "other", 1), ("Pune", "login", 2), ("Pune", "other", 2)]


def test_vocabulary_in_sql_is_the_vocabulary_in_python(fresh_deployment: Deployment) -> None:
    """The aggregate dimension (and reconciliation) compute a vocabulary in PostgreSQL; it must give what
    the Python chain gives, for any text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from psycopg import sql

    from civicsync.config.masking import Vocabulary
    from civicsync.transform.vocabulary import vocabulary_function, vocabulary_sql

    spec = Vocabulary(values=["payment_delay", "Praise", "ÜBER ok"], aliases={"late-money": "payment_delay"})
    fn = vocabulary_function(spec)
    query = sql.SQL("SELECT {} FROM (SELECT %s::text AS v) t").format(vocabulary_sql(sql.Identifier("t", "v"), spec))
    with dep_conn(fresh_deployment) as conn:

        @settings(max_examples=300, deadline=None)
        @given(st.one_of(st.sampled_from(["payment delay", " PAYMENT-delay\t", "late__money", "praise ", "über ok",
                                          "ÜBER  OK", "İpraise"]), st.text(max_size=20)))
        def same(value: str) -> None:
            row = conn.execute(query, (value.replace("\x00", ""),)).fetchone()
            assert row is not None and row[0] == fn(value.replace("\x00", "")), value

        same()


def dep_conn(dep: Deployment) -> Any:
    return dep.connect("warehouse")
