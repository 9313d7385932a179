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
    zero-width and other format characters (Unicode categories Cf, Mn, Me) and Hangul fillers removed,
    every Unicode dash (en, em, minus), middle dot and Braille blank as '-', HTML character references
    ('&#64;', '&#x40;', '&commat;') and '%XX' of a printable ASCII character decoded, repeatedly (up to
    three rounds: '%2540', '&amp;#64;'), '(at)'/'[at]'/'{at}'/'<at>' as '@' and '(dot)'/'[dot]' as '.',
    and whitespace next to an '@' removed. The decoding runs only on a text holding '&' or '%'.
    E-mail addresses are searched here.
``digits``
    ``text`` with every separator (whitespace, '.', '-', '/', '_', brackets) as a space. Phone
    numbers and id shapes are searched here.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

SEPARATORS = " \t\r\n\f\v.-/_()[]{}"
_TO_SPACE = str.maketrans(dict.fromkeys(SEPARATORS, " "))
_PERCENT = re.compile(r"%([2-7][0-9A-Fa-f])")
_AT_SPACED = re.compile(r"\s+@\s*|@\s+")
_AT_WORD = re.compile(r"\s*[(\[{<]\s*at\s*[)\]}>]\s*", re.IGNORECASE)
# An HTML character reference: '&#64;', '&#x40;', '&commat;' (';' optional, as browsers read it).
_HTML_REF = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?")
_DECODE_ROUNDS = 3  # '%2540' and '&amp;#64;' are encoded twice; deeper nesting is not followed
_DOT_WORD = re.compile(r"\s*[(\[{]\s*dot\s*[)\]}]\s*", re.IGNORECASE)
_BRACKETS = frozenset("([{<")
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


def _percent(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def _html_ref(m: re.Match[str]) -> str | None:
    """A character reference's normal form, or None when it is not one ('&copy' is; '&x' is not)."""
    decoded = html.unescape(m.group())
    return None if decoded == m.group() else "".join(_char_form(c) for c in decoded)


Replacement = str | Callable[[re.Match[str]], str | None]


def _rewrite(text: str, starts: list[int], ends: list[int], pattern: re.Pattern[str],
             replace: Replacement) -> tuple[str, list[int], list[int]]:
    """Replace each match of ``pattern`` by ``replace`` (a function: what it returns for the match,
    None to leave the match as it is); the replacement's characters span the whole original span of
    the match."""
    out: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    last = 0
    for m in pattern.finditer(text):
        rep = replace if isinstance(replace, str) else replace(m)
        if rep is None:
            continue
        a, b = m.span()
        out.append(text[last:a])
        new_starts += starts[last:a]
        new_ends += ends[last:a]
        out.append(rep)
        new_starts += [starts[a]] * len(rep)
        new_ends += [ends[b - 1]] * len(rep)
        last = b
    out.append(text[last:])
    new_starts += starts[last:]
    new_ends += ends[last:]
    return "".join(out), new_starts, new_ends


def _identity(text: str, starts: list[int] | None, ends: list[int] | None) -> tuple[list[int], list[int]]:
    """The offset map, made explicit: an ASCII text keeps the identity map (None) until it changes."""
    if starts is None or ends is None:
        return list(range(len(text))), list(range(1, len(text) + 1))
    return starts, ends


def _decode(text: str, starts: list[int] | None,
            ends: list[int] | None) -> tuple[str, list[int] | None, list[int] | None]:
    """HTML character references and '%XX' decoded, repeatedly ('%2540' is '%40' is '@';
    '&amp;#64;' is '&#64;' is '@'), while a round still changes something."""
    for _ in range(_DECODE_ROUNDS):
        before = text
        for needed, pattern, replacement in (("&" in text, _HTML_REF, _html_ref), ("%" in text, _PERCENT, _percent)):
            if needed and pattern.search(text):
                starts, ends = _identity(text, starts, ends)
                text, starts, ends = _rewrite(text, starts, ends, pattern, replacement)
        if text == before or ("&" not in text and "%" not in text):
            break
    return text, starts, ends


def normalise(original: str) -> Normalised:
    """The normalised views of ``original`` (see the module docstring)."""
    text = original
    starts: list[int] | None = None
    ends: list[int] | None = None
    if not text.isascii():
        text, starts, ends = _unicode_pass(text)
    # Each rewrite only where its cheap precondition holds: most texts need none of them.
    if "&" in text or "%" in text:
        text, starts, ends = _decode(text, starts, ends)
    bracketed = not _BRACKETS.isdisjoint(text)
    lowered = text.lower() if bracketed else ""
    for needed, pattern, replacement in (("@" in text, _AT_SPACED, "@"),
                                         (bracketed and "at" in lowered, _AT_WORD, "@"),
                                         (bracketed and "dot" in lowered, _DOT_WORD, ".")):
        if needed and pattern.search(text):
            starts, ends = _identity(text, starts, ends)
            text, starts, ends = _rewrite(text, starts, ends, pattern, replacement)
    digits = text.translate(_TO_SPACE)
    if starts is None or ends is None:
        return Normalised(original, text, digits, None, None)
    return Normalised(original, text, digits, tuple(starts), tuple(ends))
