"""The ``json`` mask: a json/jsonb document that denies by default.

A rule tree is built once from the declared paths (segments in canonical form, so 'nationalId',
'National_ID' and 'national-id' are one key); each document is then walked once:

- an object's member whose canonical key is declared goes on down the tree; any other member is
  removed (``undeclared: drop``) or kept with its key and strings redacted, digit runs of four or more
  digits hidden and numbers removed (``undeclared: redact``), so that an id split over several keys
  does not pass in pieces;
- arrays are transparent: an element is treated as the array itself would be;
- at a declared leaf, ``keep`` passes a scalar as it is, ``text`` passes a string redacted (a number
  as its redacted text, if redaction changed it), and a mask receives the value's text;
- a string holding a JSON object or array (a form stored as a string, at any depth) is masked as a
  document under the same rules and stays a string;
- after the walk, the strings that were redacted one by one (declared ``text`` and ``redact`` members,
  kept undeclared ones) are read once more as one text, in document order, so that a number or an
  address split over array elements or sibling members is found too
  (:mod:`civicsync.transform.redact.pieces`);
- an object or array reached where the rules expect a scalar is treated member by member, so a
  ``keep`` never passes undeclared members inside it.

The output is compact JSON with key order preserved and numbers kept exactly as written.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from civicsync.config.masking import JsonMask, RedactMask
from civicsync.errors import RowRejectedError
from civicsync.transform.redact.detect import Detector
from civicsync.transform.redact.needles import KnownNeedles
from civicsync.transform.redact.pieces import Piece, redact_across

KeyedMasker = Callable[[str | None, KnownNeedles | None], str | None]
_DROP = object()  # a member that does not leave the source
_MAX_EMBEDDED = 8  # JSON-in-a-string levels followed; deeper ones are treated as undeclared
_NUMBER_TOKEN = "[NUM]"
_UNDECLARED_DIGITS = re.compile(r"\d(?:[\W_]*\d){3,}")


def canonical_key(key: str) -> str:
    """A key without case, spelling or separator differences: 'National_ID' → 'nationalid'."""
    return "".join(c for c in unicodedata.normalize("NFKC", key).casefold() if c.isalnum())


class _JsonNumber(str):
    """A JSON number kept as its source text, so re-serialising never rounds or reformats it."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON (and PostgreSQL) do not.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_float=_JsonNumber, parse_int=_JsonNumber, parse_constant=_reject_constant)


def dump(node: Any) -> str:
    """Compact JSON text of a decoded document (numbers keep their exact source text)."""
    if isinstance(node, dict):
        return "{" + ",".join(_dump_str(k) + ":" + dump(v) for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(dump(v) for v in node) + "]"
    if isinstance(node, Piece):
        return dump(node.value)
    if isinstance(node, _Embedded):
        return _dump_str(dump(node.document))
    if isinstance(node, _JsonNumber):
        return str.__str__(node)
    if isinstance(node, str):
        return _dump_str(node)
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _dump_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _as_text(node: Any) -> str | None:
    """The text an inner mask sees: strings as they are, numbers as their JSON text, true/false,
    None for null, objects and arrays as their compact JSON text."""
    if isinstance(node, str):
        return str.__str__(node)
    if node is None:
        return None
    return dump(node)


def _embedded(text: str) -> Any:
    """The JSON object or array a string holds, or None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        return _DECODER.decode(stripped)
    except ValueError:
        return None


@dataclass
class _Embedded:
    """A masked document that was stored as a string: dumped as a string at the end, after the
    cross-leaf redaction has seen its pieces too."""

    document: Any


@dataclass
class _Node:
    rule: str | KeyedMasker | None = None  # 'keep', 'text', a masker, or None (a path prefix)
    children: dict[str, _Node] = field(default_factory=dict)
    redacts: bool = False  # a declared redact mask: its strings take part in the cross-leaf redaction


@dataclass
class _Walk:
    """One document's walk: the rules, the detector and the person's known values."""

    undeclared: str
    detector: Detector
    known: KnownNeedles | None
    pieces: list[Piece] = field(default_factory=list)  # the redacted strings, in document order

    def piece(self, value: Any) -> Any:
        """``value`` (a redacted string or number) as a piece of the cross-leaf redaction."""
        if not isinstance(value, str):
            return value
        p = Piece(value)
        self.pieces.append(p)
        return p

    def node(self, value: Any, node: _Node, depth: int) -> Any:
        if isinstance(value, list):
            return [v for v in (self.node(item, node, depth) for item in value) if v is not _DROP]
        if callable(node.rule):
            masked = self.leaf(value, node.rule)  # a declared mask sees any value, containers as their text
            return self.piece(masked) if node.redacts else masked
        if isinstance(value, str) and not isinstance(value, _JsonNumber):
            inner = _embedded(value)
            if inner is not None:
                if depth >= _MAX_EMBEDDED:
                    return self.undeclared_value(value, depth)
                masked = self.node(inner, node, depth + 1)
                return _DROP if masked is _DROP else _Embedded(masked)
        if node.rule is not None and not isinstance(value, dict):
            return self.leaf(value, node.rule)
        if node.rule == "text":
            return self.redacted(value, depth)
        if isinstance(value, dict):
            return self.members(value, node, depth)
        return self.undeclared_value(value, depth)

    def members(self, obj: dict[str, Any], node: _Node, depth: int) -> Any:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            child = node.children.get(canonical_key(key))
            if child is not None:
                masked = self.node(value, child, depth)
            elif self.undeclared == "drop":
                continue
            else:
                key = self.detector.redact(key, self.known)
                masked = self.undeclared_value(value, depth)
            if masked is not _DROP:
                out[key] = masked
        return out

    def leaf(self, value: Any, rule: str | KeyedMasker) -> Any:
        if rule == "keep":
            return value
        if rule == "text":
            if value is None or isinstance(value, bool):
                return value
            text = str.__str__(value)
            redacted = self.detector.redact(text, self.known)
            return self.piece(value if redacted == text else redacted)
        assert callable(rule)
        return rule(_as_text(value), self.known)

    def undeclared_value(self, value: Any, depth: int) -> Any:
        return _DROP if self.undeclared == "drop" else self.redacted(value, depth)

    def redacted(self, value: Any, depth: int) -> Any:
        """A value nobody declared, kept: keys and strings redacted, digit runs and numbers hidden."""
        if isinstance(value, dict):
            return {self.detector.redact(k, self.known): self.redacted(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redacted(i, depth) for i in value]
        if isinstance(value, _JsonNumber):
            return None  # a number nobody declared may be a piece of an id
        if isinstance(value, str):
            inner = _embedded(value) if depth < _MAX_EMBEDDED else None
            if inner is not None:
                return _Embedded(self.redacted(inner, depth + 1))
            return self.piece(_UNDECLARED_DIGITS.sub(_NUMBER_TOKEN, self.detector.redact(value, self.known)))
        return value


def build_json_masker(spec: JsonMask, inner: Callable[[Any], KeyedMasker]) -> KeyedMasker:
    """The keyed masking function of a json mask; ``inner`` builds the masker of a declared mask."""
    root = _Node()
    for path, rule in spec.paths.items():
        node = root
        if path != "$":
            for segment in path.split("."):
                if not segment:
                    raise ValueError(f"json mask: path {path!r} has an empty segment")
                node = node.children.setdefault(canonical_key(segment), _Node())
        node.rule = rule if isinstance(rule, str) else inner(rule)
        node.redacts = isinstance(rule, RedactMask)
    detector = Detector(spec.redact)
    undeclared = spec.undeclared

    def mask_document(value: str | None, known: KnownNeedles | None) -> str | None:
        if value is None:
            return None
        try:
            document = _DECODER.decode(value)
        except json.JSONDecodeError as exc:
            # exc.msg and exc.pos describe the syntax problem without quoting the document.
            raise RowRejectedError(
                "mask", f"json mask: invalid JSON ({exc.msg} at position {exc.pos})") from None
        except (ValueError, RecursionError) as exc:
            raise RowRejectedError("mask", f"json mask: unusable JSON ({type(exc).__name__})") from None
        walk = _Walk(undeclared, detector, known)
        try:
            masked = walk.node(document, root, 0)
        except RecursionError:
            raise RowRejectedError("mask", "json mask: document nested too deeply") from None
        redact_across(walk.pieces, detector, known)
        return "null" if masked is _DROP else dump(masked)

    return mask_document
