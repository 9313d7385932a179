"""Unit and property tests of civicsync.transform.masking (every mask kind, no database)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from civicsync.config.masking import HmacMask, MaskSpec, RedactMask
from civicsync.errors import RowRejectedError
from civicsync.transform.masking import Masker, build_masker

SECRETS = {"pii_key": b"0123456789abcdef0123456789abcdef", "other_key": b"fedcba9876543210fedcba9876543210"}
_SPEC = TypeAdapter(MaskSpec)


def masker(spec: dict[str, Any], secrets: dict[str, bytes] = SECRETS) -> Masker:
    return build_masker(_SPEC.validate_python(spec), secrets)


REDACT = build_masker(RedactMask(kind="redact"), {})

ALL_KINDS: list[dict[str, Any]] = [
    {"kind": "keep_last"},
    {"kind": "keep_last", "template": "XXXX-XXXX-{last}"},
    {"kind": "hmac", "secret": "pii_key"},
    {"kind": "redact"},
    {"kind": "band", "bands": [{"below": 10, "label": "small"}, {"label": "big"}]},
    {"kind": "drop"},
    {"kind": "json", "paths": {"a": {"kind": "drop"}}},
]


@pytest.mark.parametrize("spec", ALL_KINDS, ids=lambda s: s["kind"])
def test_null_in_null_out(spec: dict[str, Any]) -> None:
    assert masker(spec)(None) is None


# --------------------------------------------------------------------------- keep_last


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123456789012", "XXXXXXXX9012"),
        ("1234 5678 9012", "XXXXXXXX9012"),  # separators are ignored, not counted or kept
        ("1234-5678-9012", "XXXXXXXX9012"),
        (" 1234-5678 9012 ", "XXXXXXXX9012"),
        ("12345", "X2345"),
        ("1234", "XXXX"),  # exactly n characters: nothing revealed
        ("123", "XXX"),
        ("12-3", "XXX"),
        ("", ""),
    ],
)
def test_keep_last_default(value: str, expected: str) -> None:
    assert masker({"kind": "keep_last"})(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1234 5678 9012", "XXXX-XXXX-9012"),
        ("123456789012", "XXXX-XXXX-9012"),
        ("12", "XXXX-XXXX-XXXX"),  # short: the template hides even the length
        ("1234", "XXXX-XXXX-XXXX"),
    ],
)
def test_keep_last_template(value: str, expected: str) -> None:
    assert masker({"kind": "keep_last", "template": "XXXX-XXXX-{last}"})(value) == expected


def test_keep_last_options() -> None:
    assert masker({"kind": "keep_last", "n": 2, "mask_char": "*"})("SBIN000123") == "********23"
    # n=0 keeps nothing (a naive value[-0:] would keep everything)
    assert masker({"kind": "keep_last", "n": 0})("98765") == "XXXXX"
    assert masker({"kind": "keep_last", "n": 0, "template": "acct-{last}"})("98765") == "acct-"
    # other braces in the template are literal text, and every {last} is filled
    assert masker({"kind": "keep_last", "template": "{x} {last}/{last}"})("123456") == "{x} 3456/3456"


# --------------------------------------------------------------------------- hmac


def test_hmac_value() -> None:
    spec = {"kind": "hmac", "secret": "pii_key", "length": 20, "prefix": "p_"}
    expected = "p_" + hmac.new(SECRETS["pii_key"], "आशा 9876".encode(), hashlib.sha256).hexdigest()[:20]
    assert masker(spec)("आशा 9876") == expected


def test_hmac_default_length_and_stability() -> None:
    out = masker({"kind": "hmac", "secret": "pii_key"})("123456789012")
    assert out is not None
    assert re.fullmatch(r"[0-9a-f]{32}", out)
    # a fresh build (another run) gives the same pseudonym
    assert masker({"kind": "hmac", "secret": "pii_key"})("123456789012") == out


def test_hmac_missing_secret() -> None:
    with pytest.raises(KeyError, match="nope"):
        masker({"kind": "hmac", "secret": "nope"})
    with pytest.raises(KeyError, match="nope"):
        masker({"kind": "json", "paths": {"a": {"kind": "hmac", "secret": "nope"}}})


@settings(max_examples=200)
@given(
    value=st.text(max_size=40),
    key1=st.binary(min_size=16, max_size=48),
    key2=st.binary(min_size=16, max_size=48),
    length=st.integers(min_value=16, max_value=64),
    prefix=st.sampled_from(["", "h_", "ben-"]),
)
def test_hmac_properties(value: str, key1: bytes, key2: bytes, length: int, prefix: str) -> None:
    spec = HmacMask(kind="hmac", secret="k", length=length, prefix=prefix)
    first = build_masker(spec, {"k": key1})(value)
    assert first == build_masker(spec, {"k": key1})(value)
    assert first is not None
    assert first.startswith(prefix)
    assert re.fullmatch(f"[0-9a-f]{{{length}}}", first[len(prefix) :])
    if key1 != key2:
        assert build_masker(spec, {"k": key2})(value) != first
    assert build_masker(spec, {"k": key1})(value + "x") != first


# --------------------------------------------------------------------------- redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail ravi.kumar@example.co.in now", "mail [EMAIL] now"),
        ("ravi9876543210@example.com", "[EMAIL]"),  # digits inside an address: the address is taken whole
        ("(asha_k+scheme@gov.in).", "([EMAIL])."),
        ("typo ramesh@gmail here", "typo [EMAIL] here"),
        ("id 123456789012.", "id [ID]."),
        ("id 1234 5678 9012", "id [ID]"),
        ("id 1234-5678-9012", "id [ID]"),
        ("ids 9876 5432 1098 and 6789-0123-4567", "ids [ID] and [ID]"),  # 12 digits win over phone
        ("call 9876543210", "call [PHONE]"),
        ("call 98765 43210", "call [PHONE]"),
        ("call 98765-43210", "call [PHONE]"),
        ("call +919876543210", "call [PHONE]"),
        ("call +91 98765 43210", "call [PHONE]"),
        ("call +91-98765-43210", "call [PHONE]"),
        ("call 91 9876543210", "call [ID]"),  # 12 digits without '+': an id shape first
        ("call 09876543210", "call [PHONE]"),
        ("call 0-98765 43210", "call [PHONE]"),
        ("919876543210", "[ID]"),  # bare 91 + mobile is indistinguishable from an id
        ("ph:9876543210,id:123456789012", "ph:[PHONE],id:[ID]"),
        ("x9876543210y", "x[PHONE]y"),
        ("98765432101", "98765432101"),  # 11 digits: no phone inside a longer run
        ("12345678901234", "[ID]"),  # longer than an id: it holds id-length windows
        ("5987654321", "5987654321"),  # 10 digits but not a mobile number
        ("ward 12, 3 kids, pin 560001", "ward 12, 3 kids, pin 560001"),
        ("", ""),
    ],
)
def test_redact_examples(text: str, expected: str) -> None:
    assert REDACT(text) == expected
    assert REDACT(expected) == expected


def test_redact_builtin_order_is_fixed() -> None:
    reversed_order = masker({"kind": "redact", "patterns": ["phone", "national_id", "email"]})
    assert reversed_order("123456789012 and a9876543210@b.in") == "[ID] and [EMAIL]"


def test_redact_only_listed_patterns() -> None:
    phones_only = masker({"kind": "redact", "patterns": ["phone"]})
    assert phones_only("a@b.in 9876543210 123456789012") == "a@b.in [PHONE] 123456789012"


def test_redact_custom_patterns_run_after_builtins() -> None:
    spec = {
        "kind": "redact",
        "patterns": [
            {"regex": r"[0-9]{5}", "token": "[FIVE]"},
            "phone",
            {"regex": r"\b[A-Z]{5}[0-9]{4}[A-Z]\b", "token": r"[PAN\1]"},
        ],
    }
    # the built-in phone pattern wins even though the custom one is listed first;
    # the token is literal text (no group references)
    assert masker(spec)("9876543210 12345 ABCDE1234F") == r"[PHONE] [FIVE] [PAN\1]"


# --------------------------------------------------------------------------- band

BANDS = [{"below": 10000, "label": "<10k"}, {"below": 50000, "label": "10k-50k"}, {"label": "50k+"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "<10k"),
        ("-250.5", "<10k"),
        ("9999.99", "<10k"),
        ("10000", "10k-50k"),  # 'below' is exclusive
        ("10000.00", "10k-50k"),
        ("49999.999999", "10k-50k"),
        ("50000", "50k+"),
        ("1e9", "50k+"),
        ("Infinity", "50k+"),
        ("-Infinity", "<10k"),
    ],
)
def test_band(value: str, expected: str) -> None:
    assert masker({"kind": "band", "bands": BANDS})(value) == expected


def test_band_bounds_compare_exactly() -> None:
    band = masker({"kind": "band", "bands": [{"below": 0.1, "label": "tiny"}, {"label": "rest"}]})
    assert band("0.09999") == "tiny"
    assert band("0.1") == "rest"  # the binary float 0.1 is slightly above 0.1


def test_band_no_band_catches() -> None:
    band = masker({"kind": "band", "bands": BANDS[:2]})
    assert band("49999") == "10k-50k"
    with pytest.raises(RowRejectedError) as caught:
        band("987654.32")
    assert caught.value.kind == "mask"
    assert "987654" not in str(caught.value)


@pytest.mark.parametrize("value", ["12,345.00", "₹987654", "abc", "", "NaN", "sNaN", "98765 43210"])
def test_band_not_a_number(value: str) -> None:
    with pytest.raises(RowRejectedError) as caught:
        masker({"kind": "band", "bands": BANDS})(value)
    assert caught.value.kind == "mask"
    if value:
        assert value not in str(caught.value)


# --------------------------------------------------------------------------- drop


@pytest.mark.parametrize("value", ["secret", "", "123"])
def test_drop(value: str) -> None:
    assert masker({"kind": "drop"})(value) is None


# --------------------------------------------------------------------------- json

BENEFICIARY_JSON = {
    "kind": "json",
    "paths": {
        "bank_account": {"kind": "keep_last"},
        "nominee.phone": {"kind": "redact"},
        "nominee.aadhaar": {"kind": "drop"},
    },
}


def test_json_nested_paths_order_and_numbers() -> None:
    doc = (
        '{"scheme": "pension", "bank_account": "12345678901234", "amount": 1500.50,'
        ' "nominee": {"name": "आशा", "phone": "+91 98765 43210", "aadhaar": "1234 5678 9012"}, "n": 3}'
    )
    # deny by default: only the declared members pass
    assert masker(BENEFICIARY_JSON)(doc) == (
        '{"bank_account":"XXXXXXXXXX1234","nominee":{"phone":"[PHONE]","aadhaar":null}}'
    )


def test_json_absent_paths_left_alone() -> None:
    doc = '{"scheme": "pension", "nominee": "none", "big": 12345678901234567890.123456789}'
    assert masker(BENEFICIARY_JSON)(doc) == "{}"  # undeclared members never leave; a scalar 'nominee' too
    kept = masker({"kind": "json", "paths": {"big": "keep", "scheme": "keep"}})
    assert kept(doc) == '{"scheme":"pension","big":12345678901234567890.123456789}'
    assert masker(BENEFICIARY_JSON)("[]") == "[]"
    assert masker(BENEFICIARY_JSON)('"just a string"') == "null"


def test_json_scalars_become_text() -> None:
    spec = {
        "kind": "json",
        "paths": {
            "acct": {"kind": "keep_last"},
            "income": {"kind": "band", "bands": BANDS},
            "flag": {"kind": "hmac", "secret": "pii_key", "length": 16},
            "gone": {"kind": "keep_last"},
        },
    }
    out = masker(spec)('{"acct": 12345678, "income": 12500.5, "flag": true, "gone": null}')
    assert out is not None
    doc = json.loads(out)
    assert doc["acct"] == "XXXX5678"
    assert doc["income"] == "10k-50k"
    assert doc["flag"] == masker({"kind": "hmac", "secret": "pii_key", "length": 16})("true")
    assert doc["gone"] is None


def test_json_object_at_path_is_masked_as_its_text() -> None:
    hashed = masker({"kind": "json", "paths": {"bank": {"kind": "hmac", "secret": "pii_key"}}})
    out = hashed('{"bank": {"ifsc": "SBIN0001", "no": 42}}')
    expected = masker({"kind": "hmac", "secret": "pii_key"})('{"ifsc":"SBIN0001","no":42}')
    assert out == f'{{"bank":"{expected}"}}'
    dropped = masker({"kind": "json", "paths": {"bank": {"kind": "drop"}}})
    assert dropped('{"bank": {"no": 42}, "x": 1}') == '{"bank":null}'


def test_json_arrays_are_transparent() -> None:
    spec = {
        "kind": "json",
        "paths": {"nominees.phone": {"kind": "keep_last", "n": 2}, "tags": {"kind": "drop"}},
    }
    doc = '{"nominees": [{"phone": "9876543210"}, {"phone": null}, {"name": "x"}, 7], "tags": ["a", "b"]}'
    assert masker(spec)(doc) == (
        '{"nominees":[{"phone":"XXXXXXXX10"},{"phone":null},{}],"tags":[null,null]}'
    )
    top_level = masker({"kind": "json", "paths": {"phone": {"kind": "drop"}}})
    assert top_level('[{"phone": "9876543210"}, {"phone": "1"}]') == '[{"phone":null},{"phone":null}]'


def test_json_path_through_scalar_is_absent() -> None:
    spec = {"kind": "json", "paths": {"a.b.c": {"kind": "drop"}}}
    assert masker(spec)('{"a": {"b": "scalar"}}') == '{"a":{}}'
    assert masker(spec)('{"a": {"b": {"c": 1, "d": 2}}}') == '{"a":{"b":{"c":null}}}'


def test_json_inner_json_mask() -> None:
    spec = {"kind": "json", "paths": {"raw": {"kind": "json", "paths": {"phone": {"kind": "drop"}}}}}
    assert masker(spec)(json.dumps({"raw": '{"phone": "9876543210"}'})) == '{"raw":"{\\"phone\\":null}"}'


@pytest.mark.parametrize(
    "doc",
    ['{"phone": "9876543210"', "phone 9876543210", "", '{"a": NaN}', '{"a": Infinity}', "[1, 2,]"],
)
def test_json_invalid_rejected_without_echo(doc: str) -> None:
    with pytest.raises(RowRejectedError) as caught:
        masker(BENEFICIARY_JSON)(doc)
    assert caught.value.kind == "mask"
    assert "9876543210" not in str(caught.value)


def test_json_inner_rejection_propagates() -> None:
    spec = {"kind": "json", "paths": {"income": {"kind": "band", "bands": BANDS}}}
    with pytest.raises(RowRejectedError) as caught:
        masker(spec)('{"income": "lots: 9876543210"}')
    assert "9876543210" not in str(caught.value)


def test_json_empty_path_segment_is_a_build_error() -> None:
    with pytest.raises(ValueError, match="empty segment"):
        masker({"kind": "json", "paths": {"a..b": {"kind": "drop"}}})


# --------------------------------------------------------------------------- redaction properties

DIGITS = "0123456789"
# Filler that can never form (or extend) a phone, id or address: letters and punctuation without
# '@' or '+', and short digit runs that are always fenced by letters.
_letters = st.text(alphabet=string.ascii_letters + "अआकख", min_size=1, max_size=8)
_punct = st.text(alphabet=" .,;:!?()'\"/-_\n", min_size=1, max_size=4)
_fenced_digits = st.builds(
    lambda a, d, b: a + d + b,
    st.sampled_from(string.ascii_letters),
    st.text(alphabet=DIGITS, min_size=1, max_size=3),
    st.sampled_from(string.ascii_letters),
)
filler = st.lists(st.one_of(_letters, _punct, _fenced_digits), max_size=6).map("".join)
glue = st.sampled_from(["", " ", ", ", "\n", "("])


@st.composite
def mobiles(draw: st.DrawFn) -> tuple[str, str, str]:
    """(text as written, its 10 digits, the token it must become)."""
    digits = draw(st.sampled_from("6789")) + draw(st.text(alphabet=DIGITS, min_size=9, max_size=9))
    prefix = draw(st.sampled_from(["", "+91", "91", "0"]))
    after_prefix = draw(st.sampled_from(["", " ", "-"])) if prefix else ""
    middle = draw(st.sampled_from(["", " ", "-"]))
    raw = prefix + after_prefix + digits[:5] + middle + digits[5:]
    # '91' before a 10-digit mobile number makes 12 digits: an id shape as far as anyone can tell
    token = "[ID]" if prefix == "91" else "[PHONE]"
    return raw, digits, token


@st.composite
def national_ids(draw: st.DrawFn) -> tuple[str, str, str]:
    digits = draw(st.text(alphabet=DIGITS, min_size=12, max_size=12))
    sep1, sep2 = draw(st.sampled_from(["", " ", "-"])), draw(st.sampled_from(["", " ", "-"]))
    return digits[:4] + sep1 + digits[4:8] + sep2 + digits[8:], digits, "[ID]"


_local = st.text(alphabet=string.ascii_lowercase + DIGITS + "._+-", min_size=1, max_size=20)
_label = st.text(alphabet=string.ascii_lowercase + DIGITS, min_size=1, max_size=10)


@st.composite
def addresses(draw: st.DrawFn) -> tuple[str, str, str]:
    local = draw(
        st.one_of(_local, mobiles().map(lambda m: "x" + m[1]), st.emails().map(lambda e: e.split("@")[0]))
    )
    domain = ".".join(draw(st.lists(_label, min_size=1, max_size=3)))
    tld = draw(st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=6))
    raw = f"{local}@{domain}.{tld}"
    return raw, raw, "[EMAIL]"


def _check_redacted(text: str, items: list[tuple[str, str, str]]) -> None:
    out = REDACT(text)
    assert out is not None
    flat = re.sub(r"[ \-]", "", out)
    for raw, core, token in items:
        assert raw not in out
        assert core not in flat
        assert token in out
    assert REDACT(out) == out


@settings(max_examples=200)
@given(left=filler, glue1=glue, item=mobiles(), glue2=glue, right=filler)
def test_redact_phones(left: str, glue1: str, item: tuple[str, str, str], glue2: str, right: str) -> None:
    _check_redacted(left + glue1 + item[0] + glue2 + right, [item])


@settings(max_examples=200)
@given(left=filler, glue1=glue, item=national_ids(), glue2=glue, right=filler)
def test_redact_national_ids(
    left: str, glue1: str, item: tuple[str, str, str], glue2: str, right: str
) -> None:
    _check_redacted(left + glue1 + item[0] + glue2 + right, [item])


@settings(max_examples=200)
@given(left=filler, glue1=glue, item=addresses(), glue2=glue, right=filler)
def test_redact_addresses(left: str, glue1: str, item: tuple[str, str, str], glue2: str, right: str) -> None:
    _check_redacted(left + glue1 + item[0] + glue2 + right, [item])


@settings(max_examples=200)
@given(
    items=st.lists(st.one_of(mobiles(), national_ids(), addresses()), min_size=1, max_size=5),
    fillers=st.lists(filler, min_size=6, max_size=6),
)
def test_redact_mixed_text(items: list[tuple[str, str, str]], fillers: list[str]) -> None:
    # items are kept apart by a space-fenced word so no two of them can merge into one run
    text = fillers[0]
    for (raw, _, _), gap in zip(items, fillers[1:], strict=False):
        text += f" {raw} w{gap} "
    _check_redacted(text, items)


@settings(max_examples=200)
@given(st.text(alphabet=DIGITS + " -+@._aZ[]", max_size=60))
@example("0@.@0")  # '0@[EMAIL]' once read the token as an IP-literal domain and redacted again
def test_redact_idempotent_on_digit_soup(text: str) -> None:
    once = REDACT(text)
    assert REDACT(once) == once


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(exclude_characters=DIGITS + "@"), max_size=80))
def test_redact_leaves_text_without_digits_or_at_alone(text: str) -> None:
    assert REDACT(text) == text
