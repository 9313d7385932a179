"""Text normalisation for detection, with a map back to the original text.

Detectors never look at the raw text: people write numbers and addresses in fullwidth or Devanagari
digits, with zero-width spaces inside, with dots, slashes, brackets or non-breaking spaces between
digit groups, and e-mail addresses as 'ramesh＠gmail.com', 'ramesh%40gmail.com' or 'ramesh (at)
gmail.com'. :func:`normalise` turns all of that into one plain form (:class:`Normalised`) whose every
character remembers the span of the original it came from, so that what a detector finds is redacted
in the *original* text and the rest of the text stays as the person wrote it.

Two views share one offset map (they have the same length):

``text``
    NFKC (fullwidth letters and '＠' become ASCII), every Unicode decimal digit as its ASCII digit,
    zero-width and other format characters (Unicode categories Cf, Mn, Me) removed, every Unicode dash
    (en, em, minus) and middle dot as '-', '%XX' of a printable ASCII
    character decoded, '(at)'/'[at]'/'{at}' as '@' and '(dot)'/'[dot]' as '.', and whitespace next to
    an '@' removed. E-mail addresses are searched here.
``digits``
    ``text`` with every separator (whitespace, '.', '-', '/', '_', brackets) as a space. Phone
    numbers and id shapes are searched here.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

SEPARATORS = " \t\r\n\f\v.-/_()[]{}"
_TO_SPACE = str.maketrans(dict.fromkeys(SEPARATORS, " "))
_PERCENT = re.compile(r"%([2-7][0-9A-Fa-f])")
_AT_SPACED = re.compile(r"\s+@\s*|@\s+")
_AT_WORD = re.compile(r"\s*[(\[{]\s*at\s*[)\]}]\s*", re.IGNORECASE)
_DOT_WORD = re.compile(r"\s*[(\[{]\s*dot\s*[)\]}]\s*", re.IGNORECASE)
_BRACKETS = frozenset("([{")
# Zero-width: format characters and combining marks (a stray accent, the grapheme joiner, variation
# selectors, a keycap's enclosing mark) are removed, so they cannot split a number.
_ZERO_WIDTH = frozenset({"Cf", "Mn", "Me"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers: invisible letters (default-ignorable)
# The minus sign, middle dot, hyphenation point and Braille blank separate digit groups like '-'.
_OTHER_DASHES = frozenset("\u2212\u00b7\u2027\u2800")


@dataclass(frozen=True)
class Normalised:
    """The normalised views of a text and, per character, the original span it came from."""

    original: str
    text: str
    digits: str
    starts: tuple[int, ...] | None  # None: identity (the text is its own normal form)
    ends: tuple[int, ...] | None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the normalised span [start, end)."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


_LAST_SCANNED = 0x1FFFF


@functools.lru_cache(maxsize=1)
def _special_characters() -> frozenset[str]:
    """Every non-ASCII character whose normal form holds a digit or an '@' (fullwidth, Devanagari,
    circled, superscript digits; '＠', '﹫'). Computed once per process. Planes 0 and 1 only: the
    higher planes hold no digit and no '@' (their tag digits are format characters, removed anyway)."""
    found = set()
    for code in range(0x80, _LAST_SCANNED + 1):
        c = chr(code)
        if unicodedata.decimal(c, None) is not None:
            found.add(c)
            continue
        n = unicodedata.normalize("NFKC", c)
        if n != c and any(ch.isdigit() or ch == "@" for ch in n):
            found.add(c)
    return frozenset(found)


@functools.lru_cache(maxsize=1)
def digit_like_class() -> str:
    """A regular-expression character class of every character that normalises to a digit."""
    specials = sorted(c for c in _special_characters() if any(ch.isdigit() for ch in _char_form(c)))
    return "[0-9" + "".join(re.escape(c) for c in specials) + "]"


@functools.lru_cache(maxsize=1)
def at_like_characters() -> tuple[str, ...]:
    """The non-ASCII characters whose normal form holds an '@' ('＠', '﹫')."""
    return tuple(sorted(c for c in _special_characters() if "@" in _char_form(c)))


def _char_form(c: str) -> str:
    """The normal form of one character ('' for a format character)."""
    if c.isascii():
        return c
    category = unicodedata.category(c)
    if category in _ZERO_WIDTH or c in _FILLERS:
        return ""
    if category == "Pd" or c in _OTHER_DASHES:  # en/em dashes, the minus sign: dashes like '-'
        return "-"
    d = unicodedata.decimal(c, None)
    if d is not None:
        return str(d)
    n = unicodedata.normalize("NFKC", c)
    return "".join(str(unicodedata.decimal(ch)) if unicodedata.decimal(ch, None) is not None else ch for ch in n)


def _unicode_pass(text: str) -> tuple[str, list[int], list[int]]:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, c in enumerate(text):
        form = _char_form(c)
        for ch in form:
            chars.append(ch)
            starts.append(i)
            ends.append(i + 1)
    return "".join(chars), starts, ends


def _rewrite(text: str, starts: list[int], ends: list[int], pattern: re.Pattern[str],
             replace: str | None) -> tuple[str, list[int], list[int]]:
    """Replace each match of ``pattern`` by ``replace`` (None: the decoded %XX character); the
    replacement's characters span the whole original span of the match."""
    out: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    last = 0
    for m in pattern.finditer(text):
        a, b = m.span()
        out.append(text[last:a])
        new_starts += starts[last:a]
        new_ends += ends[last:a]
        rep = chr(int(m.group(1), 16)) if replace is None else replace
        out.append(rep)
        new_starts += [starts[a]] * len(rep)
        new_ends += [ends[b - 1]] * len(rep)
        last = b
    out.append(text[last:])
    new_starts += starts[last:]
    new_ends += ends[last:]
    return "".join(out), new_starts, new_ends


def normalise(original: str) -> Normalised:
    """The normalised views of ``original`` (see the module docstring)."""
    text = original
    starts: list[int] | None = None
    ends: list[int] | None = None
    if not text.isascii():
        text, starts, ends = _unicode_pass(text)
    # Each rewrite only where its cheap precondition holds: most texts need none of them.
    bracketed = not _BRACKETS.isdisjoint(text)
    lowered = text.lower() if bracketed else ""
    for needed, pattern, replacement in (("%" in text, _PERCENT, None),
                                         ("@" in text, _AT_SPACED, "@"),
                                         (bracketed and "at" in lowered, _AT_WORD, "@"),
                                         (bracketed and "dot" in lowered, _DOT_WORD, ".")):
        if needed and pattern.search(text):
            if starts is None or ends is None:  # an ASCII text keeps the identity map until it changes
                starts, ends = list(range(len(text))), list(range(1, len(text) + 1))
            text, starts, ends = _rewrite(text, starts, ends, pattern, replacement)
    digits = text.translate(_TO_SPACE)
    if starts is None or ends is None:
        return Normalised(original, text, digits, None, None)
    return Normalised(original, text, digits, tuple(starts), tuple(ends))
