"""Redaction across the strings of one JSON document: a number or an address written in pieces.

A form can hold a phone number as ``["98765", "43210"]`` or as ``{"name": "98765", "phone": "43210"}``:
each string alone is harmless, together they are a phone. After each string has been redacted on its
own, :func:`redact_across` reads the redacted strings of a document once more as one text, in document
order, joined by a space, which the detector treats like any separator between digit groups. The rule
is therefore the free text's rule: pieces join exactly when the same characters typed one after the
other in a comment, a space between them, would be found. Two numbers are one run only when nothing
but separators lies between them, and a run is a finding only when it is a valid phone number for the
region or has exactly an id length of digits (see :mod:`civicsync.transform.redact.detect`): an age
and a count (``"34"``, ``"2"``) never become a phone; two five-digit strings that together form a
valid mobile number do, as they would in a comment. A finding that lies inside a single string was
already redacted by that string's own rule and is left as that rule decided; a finding spanning two
or more strings is replaced, in every string it touches, by its token over the characters it covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from civicsync.transform.redact.detect import Detector
from civicsync.transform.redact.needles import KnownNeedles
from civicsync.transform.redact.normalise import normalise

JOIN = " "
"""What stands between two pieces in the joined text: a separator of digit groups (normalise.SEPARATORS)."""


@dataclass
class Piece:
    """One redacted string of a document; :func:`redact_across` may redact it further in place."""

    value: str


def redact_across(pieces: Sequence[Piece], detector: Detector, known: KnownNeedles | None) -> None:
    """Redact, in ``pieces``, every finding of ``detector`` that spans two or more of them."""
    if len(pieces) < 2:
        return
    texts = [str.__str__(p.value) for p in pieces]
    joined = JOIN.join(texts)
    if not known and not detector.candidate(joined):
        return
    n = normalise(joined)
    starts: list[int] = []
    at = 0
    for t in texts:
        starts.append(at)
        at += len(t) + len(JOIN)
    cuts: dict[int, list[tuple[int, int, str]]] = {}
    for a, b, token in detector.find(n, known):
        oa, ob = n.span(a, b)
        touched = [i for i, s in enumerate(starts) if s < ob and s + len(texts[i]) > oa]
        if len(touched) < 2:
            continue  # inside one string: its own rule has decided
        for i in touched:
            cuts.setdefault(i, []).append((max(oa, starts[i]) - starts[i],
                                           min(ob, starts[i] + len(texts[i])) - starts[i], token))
    for i, spans in cuts.items():
        pieces[i].value = _replace(texts[i], spans)


def _replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with each span replaced by its token; overlapping spans merge and keep the first token."""
    out: list[str] = []
    last = 0
    for a, b, token in sorted(spans):
        if b <= last:
            continue
        out.append(text[last:max(a, last)])
        if a >= last:
            out.append(token)
        last = b
    out.append(text[last:])
    return "".join(out)
