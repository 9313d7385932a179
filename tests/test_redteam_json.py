"""Red team (issue 10 item 2, README "JSON documents deny by default"): F6's reference ``form_data`` mask
against forms in shapes the helpers did not think of. Held: nested keys in any case, JSON in a string,
percent-encoded digits, objects under masked members. Broken: a number split over the elements of an
array under a declared text/redact member passes in pieces (the README promises "an id split over three
keys never passes in pieces" only for undeclared members)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from civicsync.config.masking import MaskSpec
from civicsync.transform.masking import build_masker
from helpers import reference_raw
from pii_shapes import Pii, recoverable

PHONE, NID = "9876543210", "234567890123"


def _f6_masker() -> Any:
    spec = dict(reference_raw()["flows"]["application_submissions"]["columns"]["form_data"]["mask"])
    spec.pop("redact", None)  # known values need the database; the pattern detectors are what is tested here
    return build_masker(TypeAdapter(MaskSpec).validate_python(spec), {})


F6 = _f6_masker()

HELD: list[dict[str, Any]] = [
    {"Nominee": {"NAME": "98765 43210"}}, {"nominee": {"name": {"first": PHONE}}},
    {"nominee": {"name": "%39%38%37%36%35%34%33%32%31%30"}},
    {"nominee": json.dumps({"name": PHONE, "x": NID})}, {"national_id": [NID]}, {"national_id": {"v": NID}},
    {"applicant": {"national_id": NID}}, {"nominees": [{"phone": PHONE}]}, {"bank_account": {"no": NID}},
    {"nominee": {"relation": {"x": PHONE}}}, {"household_income": {"a": NID}},
    {"n\u043eminee": {"name": PHONE}},  # a Cyrillic look-alike key: undeclared, dropped
    {"nominee": {"n\u0430me": PHONE}},
]


@pytest.mark.parametrize("doc", HELD, ids=lambda d: json.dumps(d, ensure_ascii=True)[:50])
def test_forms_the_mask_holds(doc: dict[str, Any]) -> None:
    out = F6(json.dumps(doc, ensure_ascii=False))
    for digits in (PHONE, NID):
        assert not recoverable(Pii("x", "", digits=digits), str(out)), out


SPLIT: list[dict[str, Any]] = [
    {"nominee": {"name": ["Ravi", "98765", "43210"]}},
    {"nominee": {"name": ["2345", "6789", "0123"]}},
    {"nominee": [{"name": "98765"}, {"name": "43210"}]},
    {"nominee": {"phone": ["98765", "43210"]}},
    {"nominee": {"name": "98765", "phone": "43210"}},
]


@pytest.mark.parametrize("doc", SPLIT, ids=lambda d: json.dumps(d)[:50])
def test_a_number_split_over_array_elements_does_not_pass(doc: dict[str, Any]) -> None:
    out = str(F6(json.dumps(doc)))
    assert not any(recoverable(Pii("x", "", digits=d), out) for d in (PHONE, NID)), out


MORE_SPLIT: list[dict[str, Any]] = [
    {"nominee": {"name": ["98", "765", "432", "10"]}},  # pieces shorter than any single-string finding
    {"nominee": {"name": "Ravi +91", "phone": "98765-43210"}},
    {"nominee": json.dumps({"name": ["98765", "43210"]})},  # the split inside a form stored as a string
    {"nominee": [{"name": "\u0669\u0668\u0667\u0666\u0665"}, {"phone": "\u0664\u0663\u0662\u0661\u0660"}]},
    {"nominee": {"name": [9876, 543210]}},  # numbers, not strings
]


@pytest.mark.parametrize("doc", MORE_SPLIT, ids=lambda d: json.dumps(d)[:50])
def test_more_splits_do_not_pass(doc: dict[str, Any]) -> None:
    out = str(F6(json.dumps(doc, ensure_ascii=False)))
    assert not any(recoverable(Pii("x", "", digits=d), out) for d in (PHONE, NID)), out


def test_an_email_split_over_members_does_not_pass() -> None:
    out = str(F6(json.dumps({"nominee": {"name": ["ramesh.k1987", "@example.org"]}})))
    assert not recoverable(Pii("email", "", local="ramesh.k1987", domain="example.org"), out), out


def test_only_the_digits_of_a_finding_are_redacted_in_each_piece() -> None:
    out = json.loads(str(F6(json.dumps({"nominee": {"name": ["Ravi Kumar 98765", "43210 is my son"]}}))))
    assert out == {"nominee": {"name": ["Ravi Kumar [PHONE]", "[PHONE] is my son"]}}


NOT_A_NUMBER: list[dict[str, Any]] = [
    {"nominee": {"name": ["34", "2"], "relation": "son"}},         # an age and a count
    {"nominee": {"name": ["1234", "5678"]}},                       # eight digits: no phone, no id length
    {"nominee": {"name": "Ravi 45", "phone": "12 children"}},
    {"nominee": [{"name": "Flat 402"}, {"name": "Block 7"}]},
]


@pytest.mark.parametrize("doc", NOT_A_NUMBER, ids=lambda d: json.dumps(d)[:50])
def test_unrelated_short_numbers_stay(doc: dict[str, Any]) -> None:
    """The pieces join by the free text's rule: only a valid phone or an id-length run is a finding."""
    text = json.dumps(doc)
    assert json.loads(str(F6(text))) == doc


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([PHONE, NID, "9812345670", "701234567890"]), st.data())
def test_any_split_of_a_number_over_pieces_is_caught(digits: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, len(digits) - 1), min_size=1, max_size=5)))
    parts = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    shape = data.draw(st.sampled_from(["array", "objects", "siblings"]))
    if shape == "array":
        doc: Any = {"nominee": {"name": parts}}
    elif shape == "objects":
        doc = {"nominee": [{"name": p} for p in parts]}
    else:
        doc = {"nominee": [{"name": p, "phone": q} for p, q in zip(parts[::2], [*parts[1::2], ""], strict=False)]}
    out = str(F6(json.dumps(doc)))
    assert not recoverable(Pii("x", "", digits=digits), out), (doc, out)
