"""Masking: the one implementation of every ``mask`` kind a config can name.

:func:`build_masker` turns a :data:`~civicsync.config.models.MaskSpec` into a plain function over
one column value; :func:`build_keyed_masker` into one that also takes the person's known values
(:class:`~civicsync.transform.redact.detect.KnownNeedles`, for ``redact`` and ``json`` masks that declare
``known_values``). Values are PostgreSQL's *text representation* of the column (what COPY text
format and pgoutput deliver), or ``None`` for SQL NULL; every kind maps NULL to NULL. All the
work that does not depend on the value (compiling detectors, looking up keys, parsing band bounds,
building JSON rule trees) happens once at build time, because the returned function runs once per
row on tables of millions of rows.

Errors raised while masking a value are :class:`~civicsync.errors.RowRejectedError` with
``kind="mask"``; their messages never contain the value, since it is personal data by definition.

The kinds:

``keep_last``
    Keep the last ``n`` characters. Spaces and dashes are separators and are ignored: they are
    removed before counting, so '1234 5678 9012' and '1234-5678-9012' both keep '9012', and the
    output carries no separators ('XXXXXXXX9012'). With a ``template`` the output is the template
    with every ``{last}`` replaced ('XXXX-XXXX-{last}' → 'XXXX-XXXX-9012'). A value of ``n`` or
    fewer characters (after removing separators) is masked entirely rather than revealed.

``hmac``
    ``prefix`` + the first ``length`` hex digits of HMAC-SHA256(secret, UTF-8 value). The same
    value and key give the same pseudonym on every run, so masked columns still join.

``redact``
    Replace personal data inside free text with tokens ([EMAIL], [ID], [PHONE]); see
    :mod:`civicsync.transform.redact.detect` for what is found and what is not. Custom patterns then
    run in their listed order on the result, their tokens taken literally (no group references).
    Redacting redacted text changes nothing: the tokens hold no digit and no '@'.

``band``
    Replace a number by the label of the first band whose ``below`` bound is greater than it.

``drop``
    Always NULL.

``vocabulary``
    The value if it is one of the declared values (ignoring case, surrounding spaces and
    space/'-'/'_' differences; written as declared), else the vocabulary's default.

``json``
    Deny by default inside a json/jsonb document: see :mod:`civicsync.transform.jsonmask`.
"""

from __future__ import annotations

import hmac
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import assert_never

from civicsync.config.masking import (
    BandMask,
    CustomPattern,
    DropMask,
    HmacMask,
    JsonMask,
    KeepLastMask,
    MaskSpec,
    RedactMask,
    VocabularyMask,
)
from civicsync.errors import RowRejectedError
from civicsync.transform.jsonmask import KeyedMasker, build_json_masker
from civicsync.transform.redact.detect import Detector
from civicsync.transform.redact.needles import KnownNeedles
from civicsync.transform.vocabulary import vocabulary_function

Masker = Callable[[str | None], str | None]
"""A masking function: PostgreSQL text value (or None for NULL) in, masked text (or None) out."""

__all__ = ["KeyedMasker", "Masker", "build_keyed_masker", "build_masker"]


# --------------------------------------------------------------------------- redact, vocabulary


def _literal_replacement(token: str) -> str:
    # re.sub reads backslashes in the replacement as escapes and group references; a token is a
    # literal, so escape them.
    return token.replace("\\", "\\\\")


def _redact_masker(spec: RedactMask) -> KeyedMasker:
    detector = Detector(spec)
    custom = [(re.compile(p.regex), _literal_replacement(p.token))
              for p in spec.patterns if isinstance(p, CustomPattern)]

    def redact(value: str | None, known: KnownNeedles | None) -> str | None:
        if value is None:
            return None
        value = detector.redact(value, known, checked=known is not None)
        for regex, token in custom:
            value = regex.sub(token, value)
        return value

    return redact


def _vocabulary_masker(spec: VocabularyMask) -> Masker:
    lookup = vocabulary_function(spec)
    return lambda value: None if value is None else lookup(value)


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


# --------------------------------------------------------------------------- entry point


def _drop(value: str | None) -> None:
    return None


def _unkeyed(masker: Masker) -> KeyedMasker:
    return lambda value, known: masker(value)


def _value_masker(spec: MaskSpec, secrets: Mapping[str, bytes]) -> Masker | None:
    """The plain function of a kind that never uses known values (None for ``redact`` and ``json``)."""
    match spec:
        case KeepLastMask():
            return _keep_last_masker(spec)
        case HmacMask():
            return _hmac_masker(spec, secrets)
        case BandMask():
            return _band_masker(spec)
        case DropMask():
            return _drop
        case VocabularyMask():
            return _vocabulary_masker(spec)
        case RedactMask() | JsonMask():
            return None
        case _:
            assert_never(spec)


def build_keyed_masker(spec: MaskSpec, secrets: Mapping[str, bytes]) -> KeyedMasker:
    """The masking function for ``spec``, taking the person's known values as a second argument
    (None when the flow knows none; only ``redact`` and ``json`` masks use them).

    ``secrets`` maps secret names to key bytes; only ``hmac`` masks (also inside ``json``) use it,
    and a secret they name that is missing raises :class:`KeyError` here, at build time (config
    validation normally prevents this). A malformed spec the models let through (a NaN band bound)
    raises :class:`ValueError`.

    The returned function maps ``None`` to ``None`` and raises
    :class:`~civicsync.errors.RowRejectedError` (``kind="mask"``) for a value it cannot mask: a
    ``band`` value that is not a number or that no band catches, a ``json`` value that is not
    valid JSON. The messages never include the value.
    """
    if isinstance(spec, RedactMask):
        return _redact_masker(spec)
    if isinstance(spec, JsonMask):
        return build_json_masker(spec, lambda inner: build_keyed_masker(inner, secrets))
    plain = _value_masker(spec, secrets)
    assert plain is not None
    return _unkeyed(plain)


def build_masker(spec: MaskSpec, secrets: Mapping[str, bytes]) -> Masker:
    """The masking function for ``spec`` when the person's known values are not at hand (see
    :func:`build_keyed_masker`); one plain function for the kinds that never use them."""
    plain = _value_masker(spec, secrets)
    if plain is not None:
        return plain
    keyed = build_keyed_masker(spec, secrets)
    return lambda value: keyed(value, None)
