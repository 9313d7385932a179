"""Masking: the one implementation of every ``mask`` kind a config can name.

:func:`build_masker` turns a :data:`~civicsync.config.models.MaskSpec` into a plain function over
one column value. Values are PostgreSQL's *text representation* of the column (what COPY text
format and pgoutput deliver), or ``None`` for SQL NULL; every kind maps NULL to NULL. All the
work that does not depend on the value (compiling regular expressions, looking up keys, parsing
band bounds, splitting JSON paths) happens once in :func:`build_masker`, because the returned
function runs once per row on tables of millions of rows.

Errors raised while masking a value are :class:`~civicsync.errors.RowRejectedError` with
``kind="mask"``; their messages never contain the value, since it is personal data by definition.

The kinds:

``keep_last``
    Keep the last ``n`` characters. Spaces and dashes are separators and are ignored: they are
    removed before counting, so '1234 5678 9012' and '1234-5678-9012' both keep '9012', and the
    output carries no separators ('XXXXXXXX9012'). With a ``template`` the output is the template
    with every ``{last}`` replaced ('XXXX-XXXX-{last}' → 'XXXX-XXXX-9012'). A value of ``n`` or
    fewer characters (after removing separators) is masked entirely rather than revealed: without
    a template every character becomes ``mask_char``; with one, ``{last}`` becomes ``n`` mask
    characters, so the output does not even show how short the value was.

``hmac``
    ``prefix`` + the first ``length`` hex digits of HMAC-SHA256(secret, UTF-8 value). The same
    value and key give the same pseudonym on every run, so masked columns still join.

``redact``
    Replace personal data inside free text with tokens. The built-in patterns always run in the
    order email → national_id → phone, whatever order the config lists them in (so a 12-digit
    id is never half-eaten as a phone and an address with digits is taken whole); custom
    patterns then run in their listed order, their tokens taken literally (no group references).
    See :data:`EMAIL_RE`, :data:`NATIONAL_ID_RE` and :data:`PHONE_RE` for exactly what is matched
    and what is not. Redacting redacted text changes nothing: the built-in tokens hold no digit and
    no '@', and the number patterns refuse to start or end next to a digit, so a token never
    completes a new match. Custom patterns keep that property only if no pattern matches a token.

``band``
    Replace a number by the label of the first band whose ``below`` bound is greater than it.

``drop``
    Always NULL.

``json``
    Mask values inside a json/jsonb document addressed by dotted paths. See
    :func:`build_masker` for the rules.
"""

from __future__ import annotations

import hmac
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, assert_never

from civicsync.config.models import (
    BandMask,
    CustomPattern,
    DropMask,
    HmacMask,
    JsonMask,
    KeepLastMask,
    MaskSpec,
    RedactMask,
)
from civicsync.errors import RowRejectedError

Masker = Callable[[str | None], str | None]
"""A masking function: PostgreSQL text value (or None for NULL) in, masked text (or None) out."""

# --------------------------------------------------------------------------- redaction patterns

EMAIL_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*")
"""An e-mail address: ``local@domain``.

The local part is up to 64 of the characters RFC 5322 allows unquoted (letters and digits of any
script, ``.!#$%&'*+/=?^`{|}~-``); the domain is labels of letters, digits and dashes joined by
dots. A dot in the domain is not required, so a mistyped 'ramesh@gmail' is still redacted (the
price: '2@3' is redacted too). Limits: punctuation glued to the front of an address ('x=ramesh@..')
is taken with it; quoted local parts and IP-literal domains ('a@[10.0.0.1]') are not recognised
as such; of a local part longer than 64 characters only the last 64 are taken (bounding the
local part keeps the scan linear on long texts).
"""

NATIONAL_ID_RE = re.compile(
    r"""
    (?<![0-9])                              # not the tail of a longer number
    (?!(?<=\+)91[6-9][0-9]{9}(?![0-9]))     # '+91' + mobile number: a phone, not an id
    [0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}
    (?![0-9])                               # not the head of a longer number
    """,
    re.VERBOSE,
)
"""A 12-digit Aadhaar-style number, plain ('123456789012') or grouped 4-4-4 by spaces or dashes
('1234 5678 9012', '1234-5678-9012'; mixed separators too).

Any 12 digits qualify (not only valid Aadhaar numbers: other 12-digit identifiers are hidden as
well). The number must stand alone: digits immediately before or after it mean it is part of a
longer number and it is left alone (a 16-digit card number grouped 4-4-4-4 loses its first 12
digits, though). '+91' followed by a 10-digit mobile number is left to :data:`PHONE_RE`; a bare
'91' + mobile number ('919876543210') is indistinguishable from an id and becomes ``[ID]``. ASCII
digits only.
"""

PHONE_RE = re.compile(
    r"""
    (?: \+91[ -]?                           # '+91': a '+' needs no guard against digits before it
      | (?<![0-9]) (?:(?:91|0)[ -]?)?       # else no digit directly before the number or its prefix
    )
    [6-9][0-9]{4}[ -]?[0-9]{5}
    (?![0-9])                               # not the head of a longer number
    """,
    re.VERBOSE,
)
"""An Indian mobile number: 10 digits starting with 6-9, optionally split 5-5 by a space or dash
('98765 43210', '98765-43210'), optionally prefixed by '+91', '91' or '0', itself optionally
followed by a space or dash ('+91 98765 43210', '0-9876543210', '91 9876543210').

The number must stand alone: no digit directly before it (or before its '91'/'0' prefix) or after
it, so it never matches inside a longer digit run. Limits: other groupings ('987 654 3210'),
brackets ('(+91) ...'), '0091' prefixes, landline numbers and non-ASCII digits are not recognised.
"""

_BUILTIN_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # Order matters and is fixed: e-mail first so an address containing digits is taken whole,
    # then ids so a 12-digit number is not half-eaten by the 10-digit phone pattern.
    ("email", EMAIL_RE, "[EMAIL]"),
    ("national_id", NATIONAL_ID_RE, "[ID]"),
    ("phone", PHONE_RE, "[PHONE]"),
)


def _literal_replacement(token: str) -> str:
    # re.sub reads backslashes in the replacement as escapes and group references; a token is a
    # literal, so escape them.
    return token.replace("\\", "\\\\")


def _redact_masker(spec: RedactMask) -> Masker:
    wanted = {p for p in spec.patterns if isinstance(p, str)}
    steps: list[tuple[re.Pattern[str], str]] = [
        (regex, token) for name, regex, token in _BUILTIN_PATTERNS if name in wanted
    ]
    steps += [
        (re.compile(p.regex), _literal_replacement(p.token))
        for p in spec.patterns
        if isinstance(p, CustomPattern)
    ]
    # A text without '@' cannot hold an address; skipping the e-mail scan then saves most of its cost.
    email_first = bool(steps) and steps[0][0] is EMAIL_RE

    def redact(value: str | None) -> str | None:
        if value is None:
            return None
        for i, (regex, token) in enumerate(steps):
            if i == 0 and email_first and "@" not in value:
                continue
            value = regex.sub(token, value)
        return value

    return redact


# --------------------------------------------------------------------------- keep_last, hmac, band


def _keep_last_masker(spec: KeepLastMask) -> Masker:
    n, mask_char, template = spec.n, spec.mask_char, spec.template
    short_last = mask_char * n

    def keep_last(value: str | None) -> str | None:
        if value is None:
            return None
        core = value.replace(" ", "").replace("-", "")
        size = len(core)
        if size <= n:
            # Never reveal a whole short value: mask every character of it.
            return mask_char * size if template is None else template.replace("{last}", short_last)
        # core[size - n:] rather than core[-n:]: with n == 0 the latter would be the whole value.
        last = core[size - n :]
        if template is None:
            return mask_char * (size - n) + last
        return template.replace("{last}", last)

    return keep_last


def _hmac_masker(spec: HmacMask, secrets: Mapping[str, bytes]) -> Masker:
    try:
        key = secrets[spec.secret]
    except KeyError:
        raise KeyError(
            f"hmac mask: secret {spec.secret!r} is not loaded (is it declared under 'secrets' and set?)"
        ) from None
    length, prefix = spec.length, spec.prefix

    def pseudonym(value: str | None) -> str | None:
        if value is None:
            return None
        return prefix + hmac.digest(key, value.encode("utf-8"), "sha256").hex()[:length]

    return pseudonym


def _band_masker(spec: BandMask) -> Masker:
    bounds: list[Decimal] = []
    labels: list[str] = []
    catch_all: str | None = None
    for band in spec.bands:
        if band.below is None:
            catch_all = band.label
            continue
        # Through repr so the bound is the number written in the config (0.1, not the binary
        # float 0.1000000000000000055...): band edges must compare exactly.
        bound = Decimal(repr(band.below))
        if bound.is_nan():
            raise ValueError("band mask: a band bound is NaN")
        bounds.append(bound)
        labels.append(band.label)
    highest = bounds[-1] if bounds else None

    def band_of(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            number = Decimal(value)
        except (InvalidOperation, ValueError):
            number = None
        if number is None or number.is_nan():
            raise RowRejectedError("mask", "band mask: the value is not a number")
        # bisect_right gives the first bound strictly greater than the value: 'below' is exclusive.
        i = bisect_right(bounds, number)
        if i < len(labels):
            return labels[i]
        if catch_all is not None:
            return catch_all
        raise RowRejectedError(
            "mask",
            f"band mask: the value is not below the highest bound ({highest}) and no band catches the rest",
        )

    return band_of


# --------------------------------------------------------------------------- json


class _JsonNumber(str):
    """A JSON number kept as its source text, so re-serialising never rounds or reformats it."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON (and PostgreSQL) do not.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_float=_JsonNumber, parse_constant=_reject_constant)


def _dump(node: Any) -> str:
    """Compact JSON text of a decoded document (as ``json.dumps`` with separators (',', ':') and
    ``ensure_ascii=False``, except that numbers keep their exact source text)."""
    if isinstance(node, dict):
        return "{" + ",".join(_dump_str(k) + ":" + _dump(v) for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_dump(v) for v in node) + "]"
    if isinstance(node, _JsonNumber):
        return str.__str__(node)
    if isinstance(node, str):
        return _dump_str(node)
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(int(node))


def _dump_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _as_text(node: Any) -> str | None:
    """The text an inner masker sees for a JSON value: strings as they are, numbers as their JSON
    text, true/false, None for null, objects as their compact JSON text."""
    if isinstance(node, str):
        return str.__str__(node)
    if node is None:
        return None
    return _dump(node)


def _masked(node: Any, keys: tuple[str, ...], depth: int, masker: Masker) -> Any:
    """``node`` with the value at ``keys[depth:]`` masked (in place where possible).

    Arrays are transparent: wherever the path meets an array, in the middle or at its end, it
    applies to every element. A path that runs into a scalar or a missing key is absent: nothing
    changes."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _masked(item, keys, depth, masker)
        return node
    if depth == len(keys):
        return masker(_as_text(node))
    if isinstance(node, dict):
        key = keys[depth]
        if key in node:
            node[key] = _masked(node[key], keys, depth + 1, masker)
    return node


def _json_masker(spec: JsonMask, secrets: Mapping[str, bytes]) -> Masker:
    paths: list[tuple[tuple[str, ...], Masker]] = []
    for path, inner in spec.paths.items():
        keys = tuple(path.split("."))
        if not all(keys):
            raise ValueError(f"json mask: path {path!r} has an empty segment")
        paths.append((keys, build_masker(inner, secrets)))

    def mask_document(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            document = _DECODER.decode(value)
        except json.JSONDecodeError as exc:
            # exc.msg and exc.pos describe the syntax problem without quoting the document.
            raise RowRejectedError(
                "mask", f"json mask: invalid JSON ({exc.msg} at position {exc.pos})"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise RowRejectedError("mask", f"json mask: unusable JSON ({type(exc).__name__})") from None
        try:
            for keys, masker in paths:
                document = _masked(document, keys, 0, masker)
            return _dump(document)
        except RecursionError:
            raise RowRejectedError("mask", "json mask: document nested too deeply") from None

    return mask_document


# --------------------------------------------------------------------------- entry point


def _drop(value: str | None) -> None:
    return None


def build_masker(spec: MaskSpec, secrets: Mapping[str, bytes]) -> Masker:
    """The masking function for ``spec``.

    ``secrets`` maps secret names to key bytes; only ``hmac`` masks (also inside ``json``) use it,
    and a secret they name that is missing raises :class:`KeyError` here, at build time (config
    validation normally prevents this). A malformed spec the models let through (a NaN band bound,
    an empty json path segment) raises :class:`ValueError`.

    The returned function maps ``None`` to ``None`` and raises
    :class:`~civicsync.errors.RowRejectedError` (``kind="mask"``) for a value it cannot mask: a
    ``band`` value that is not a number or that no band catches, a ``json`` value that is not
    valid JSON. The messages never include the value.

    ``json`` masks parse the document, then apply each path in the order the config lists them.
    A path is dot-separated object keys ('bank_account', 'nominee.phone'); keys containing dots
    cannot be addressed. Arrays are transparent: a path meeting an array applies to every element,
    so 'nominees.phone' masks the phone of every nominee, and a path ending at an array masks each
    element (a ``drop`` there leaves an array of nulls). A path that is absent from a document is
    left alone. The inner mask receives text: a string as it is, a number as its JSON text
    ('12.50'), 'true'/'false', an object as its compact JSON text, and JSON null as ``None``. Its
    result goes back as a JSON string, or null for ``None``. The output is compact JSON
    (separators ',' and ':', non-ASCII characters unescaped) with key order preserved and numbers
    kept exactly as written; for duplicate keys (possible in a json, not a jsonb, column) the last
    one wins.
    """
    match spec:
        case KeepLastMask():
            return _keep_last_masker(spec)
        case HmacMask():
            return _hmac_masker(spec, secrets)
        case RedactMask():
            return _redact_masker(spec)
        case BandMask():
            return _band_masker(spec)
        case DropMask():
            return _drop
        case JsonMask():
            return _json_masker(spec, secrets)
        case _:
            assert_never(spec)
