"""Issue 10.7: protected values written in many shapes go through every flow that carries free text or
JSON (F12 comment, F6 form_data, F4 decision_note; F3 reasons), end to end against real PostgreSQL with
the real CDC workers, and no raw value can be recovered from what reached the other database.

The recovery check (tests/pii_shapes.recoverable) is independent of the product's code: digits are
normalised and compared with every non-digit removed, e-mails are matched on local part and domain."""

from __future__ import annotations

import itertools
import json
import string
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicsync.config import LoadedConfig
from civicsync.jobs.batch import run_batch
from fix_cdc import cdc_config, running, wait_for
from fix_db import Deployment, q
from pii_shapes import Pii, any_pii, emails, grouped, id_digits, in_prose, mobile_digits, recoverable

KEYS = {"phone": ["phone", "mobile", "Mobile_No", "contactNumber", "PHONE"],
        "national_id": ["national_id", "nationalId", "National_ID", "national-id", "aadhaar", "Aadhaar No"],
        "email": ["email", "E-Mail", "emailAddress", "mail"]}
_ids = itertools.count(1)


@st.composite
def form_with(draw: st.DrawFn, pii: Pii) -> tuple[str, bool]:
    """A portal form holding ``pii`` somewhere (JSON text, and whether it is stored as a JSON string)."""
    key = draw(st.sampled_from(KEYS[pii.kind]))
    value: Any = pii.text
    if pii.digits and draw(st.booleans()) and pii.text.isascii() and pii.text.isdigit():
        value = int(pii.text)  # a JSON number
    sentence = draw(in_prose(pii))
    placements: list[Callable[[], dict[str, Any]]] = [
        lambda: {key: value},
        lambda: {"applicant": {key: value, "name": "Asha"}},
        lambda: {"nominee": {"name": "Ravi", key: value}},
        lambda: {"nominees": [{"name": "a", key: value}, {"name": "b"}]},
        lambda: {"bank": {"account_number": value, "ifsc": "SBIN0001234"}},
        lambda: {"remarks": sentence},
        lambda: {"nominee": {"name": sentence}},                  # a declared text member: redacted
        lambda: {"nominee": {"phone": sentence}},                 # a declared masked member
        lambda: {"website": f"https://example.in/u?x={sentence}"},
        lambda: {pii.text: "mine"},                               # the value as a key
        lambda: {"ifsc": "SBIN0001234", "extra": [[{"deep": {key: value}}]]},
    ]
    if pii.digits:
        d = pii.digits
        placements.append(lambda: {"nid_part1": d[:4], "nid_part2": d[4:8], "nid_part3": d[8:]})
    doc = {"household_income": 120000, **draw(st.sampled_from(placements))()}
    as_string = draw(st.booleans())
    text = json.dumps(doc, ensure_ascii=False)
    return (json.dumps(text, ensure_ascii=False) if as_string else text), as_string


@st.composite
def known_shapes(draw: st.DrawFn, phone: str, email_local: str, email_domain: str, nid: str) -> list[Pii]:
    """The person's own values in shapes only known-value redaction can catch (odd separators, the
    e-mail's local part alone), and in any shape at all."""
    odd = draw(st.sampled_from(["|", "*", "~", ":", ";", ",", " | "]))
    return [
        Pii("phone", odd.join(phone[i:i + 2] for i in range(0, len(phone), 2)), digits=phone),
        Pii("email", f"my id on gmail is {email_local}", local=email_local, domain=""),
        draw(emails(email_local, email_domain)),
        Pii("phone", draw(grouped(phone)), digits=phone),
        Pii("national_id", draw(grouped(nid)), digits=nid),
    ]


class World:
    """One deployment with both CDC workers running; each example adds a citizen and their rows."""

    def __init__(self, dep: Deployment, config: LoadedConfig) -> None:
        self.dep = dep
        self.config = config
        q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S1', 'One', 'C',"
                          " 'OPEN')")
        q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type,"
                            " benefit_amount, status) VALUES (1, 'S1', 'One', 'D', 'C', 'cash', 1000, 'ACTIVE')")

    def citizen(self, phone: str, email: str, nid: str) -> str:
        cid = str(uuid.uuid4())
        q(self.dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone, email, updated_at)"
                               " VALUES (%s, 'A', %s, %s, now() - interval '1 day')", cid, phone, email)
        q(self.dep, "warehouse", "DELETE FROM citizen_profiles WHERE national_id = %s", nid)  # hypothesis replays
        q(self.dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, phone, email,"
                                 " updated_at) VALUES (%s, %s, 'A', %s, %s, now() - interval '1 day')",
          cid, nid, phone, email)
        return cid


def _leaks(items: list[Pii], texts: list[str]) -> list[tuple[str, str, str]]:
    return [(p.kind, p.text, t) for p in items for t in texts if recoverable(p, t)]


@pytest.mark.timeout(600)
def test_no_raw_value_is_recoverable_from_any_target(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = cdc_config(dep)
    world = World(dep, config)
    with running(config, "citizen", ["F6"]), running(config, "warehouse", ["F4"]):

        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data(), items=st.lists(any_pii, min_size=1, max_size=5), phone=mobile_digits, nid=id_digits,
               local=st.text(alphabet=string.ascii_lowercase, min_size=5, max_size=8))
        def example(data: st.DataObject, items: list[Pii], phone: str, nid: str, local: str) -> None:
            n = next(_ids)
            local = f"{local}{n}x"
            email = f"{local}@portal-mail.in"
            cid = world.citizen(phone, email, nid)
            own = data.draw(known_shapes(phone, local, "portal-mail.in", nid))
            feedback = [data.draw(in_prose(p)) for p in items + own[:4]]
            forms = [data.draw(form_with(p))[0] for p in items + own[:1]]
            notes = [data.draw(in_prose(p)) + " -- OFF-4242" for p in items + own[3:]]
            base = n * 100
            for i, comment in enumerate(feedback):
                category = data.draw(st.sampled_from(["usability", "call me on 98765 43210", "praise"]))
                q(dep, "citizen", "INSERT INTO feedback (feedback_id, citizen_id, rating, category, comment,"
                                  " created_at) VALUES (%s, %s, 3, %s, %s, clock_timestamp())",
                  base + i, cid, category, comment)
            for i, form in enumerate(forms):
                q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, form_data,"
                                  " submitted_at, updated_at) VALUES (%s, %s, 1, 'SUBMITTED', %s::jsonb, now(), now())",
                  base + i, cid, form)
            wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM applications WHERE application_id"
                                                 " BETWEEN %s AND %s", base, base + 99)[0][0] == len(forms),
                     timeout=30, what="F6 to carry the forms")
            for i, note in enumerate(notes[:len(forms)]):
                q(dep, "warehouse", "INSERT INTO application_decisions (decision_id, application_id, citizen_id,"
                                    " scheme_id, decision_code, reason, officer_id, decided_at) VALUES"
                                    " (%s, %s, %s, 1, 'UNDER_REVIEW', %s, 'OFF-4242', now())", base + i, base + i, cid,
                  note)
            wait_for(lambda: q(dep, "citizen", "SELECT count(*) FROM applications WHERE decision_note IS NOT NULL"
                                               " AND application_id BETWEEN %s AND %s", base, base + 99)[0][0]
                     == min(len(notes), len(forms)), timeout=30, what="F4 to carry the decision notes")
            run_batch(config, "F12").raise_for_error()

            comments = [str(r[0]) for r in q(dep, "warehouse", "SELECT comment FROM analytics.feedback WHERE"
                                                               " feedback_id BETWEEN %s AND %s", base, base + 99)]
            categories = {r[0] for r in q(dep, "warehouse", "SELECT category FROM analytics.feedback")}
            docs = [str(r[0]) for r in q(dep, "warehouse", "SELECT form_data::text FROM applications WHERE"
                                                           " application_id BETWEEN %s AND %s", base, base + 99)]
            decisions = [str(r[0]) for r in q(dep, "citizen", "SELECT decision_note FROM applications WHERE"
                                                              " application_id BETWEEN %s AND %s", base, base + 99)]
            control = [str(r[0]) for db in ("warehouse", "citizen") for r in q(
                dep, db, "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM civicsync.dead_letters t")]
            assert len(comments) == len(feedback) and len(docs) == len(forms)
            assert categories <= {"usability", "praise", "other"}  # free text never passes as a category
            assert _leaks(items + own[:4], comments) == []
            assert _leaks(items + own[:1], docs) == []
            assert _leaks(items + own[3:], decisions) == []
            assert not any("OFF-4242" in d for d in decisions)     # officer ids never leave the warehouse
            assert _leaks(items + own, control) == []

        example()


def test_f3_reasons_pass_only_declared_codes(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = cdc_config(dep)
    cid = World(dep, config).citizen("9876543210", "a1@x.in", "234567890123")
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A') ON CONFLICT DO NOTHING", cid)
    reasons = [
        '["income below scheme limit", "age within range"]',
        '[{"code": "district covered", "score": 0.8123}, "model score 0.91"]',
        '{"score": 0.9912, "reasons": ["category matches"]}',
        '["Income Below Scheme-Limit", "call 98765 43210"]',
    ]
    with running(config, "warehouse", ["F3"]):
        for i, r in enumerate(reasons, start=1):
            q(dep, "warehouse", "INSERT INTO eligibility_predictions (prediction_id, citizen_id, scheme_id, score,"
                                " status, model_version, reasons, predicted_at, updated_at) VALUES"
                                " (%s, %s, 1, 0.8, 'ELIGIBLE', 'm1', %s::jsonb, now(), now())", i, cid, r)
            wait_for(lambda: q(dep, "citizen", "SELECT reasons::text FROM eligibility_hints"), what="F3")
            expected = {1: ["income below scheme limit", "age within range"], 2: ["OTHER", "OTHER"],
                        3: "OTHER", 4: ["income below scheme limit", "OTHER"]}[i]
            wait_for(lambda e=expected: q(dep, "citizen", "SELECT reasons FROM eligibility_hints")[0][0] == e,
                     what=f"reasons {i}")
            q(dep, "warehouse", "DELETE FROM eligibility_predictions")
            wait_for(lambda: not q(dep, "citizen", "SELECT 1 FROM eligibility_hints"), what="delete")
