"""Hypothesis strategies: personal data written the way citizens and officers really write it, and an
independent check (not the product's code) of whether a raw value can be recovered from a text."""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

import phonenumbers
from hypothesis import strategies as st

SCRIPTS = {"ascii": 0x30, "fullwidth": 0xFF10, "devanagari": 0x0966, "arabic_indic": 0x0660, "bengali": 0x09E6,
           "persian": 0x06F0, "tamil": 0x0BE6, "gujarati": 0x0AE6}
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
SEPARATORS = [" ", "  ", "\u00a0", ".", "-", "/", "_", " - ", "\u2009", "\u202f", "\t", " / ", ". "]
WORDS = ["call", "me", "on", "my", "number", "is", "please", "id", "Aadhaar", "mail", "to", "thanks", "रमेश",
         "காசு", "नमस्ते", "ok"]
GLUE = ["", " ", ": ", ", ", "\n", " (", "=", " #"]


@dataclass(frozen=True)
class Pii:
    """A protected value as written (``text``) and what identifies it (``digits`` or ``local``@``domain``)."""

    kind: str
    text: str
    digits: str = ""
    local: str = ""
    domain: str = ""


def _in_script(draw: st.DrawFn, digits: str) -> str:
    script = draw(st.sampled_from([*SCRIPTS, "mixed"]))
    out = []
    for d in digits:
        base = SCRIPTS[draw(st.sampled_from(list(SCRIPTS)))] if script == "mixed" else SCRIPTS[script]
        out.append(chr(base + int(d)))
    return "".join(out)


@st.composite
def grouped(draw: st.DrawFn, digits: str) -> str:
    """``digits`` in any grouping, separators, brackets, digit script and zero-width characters."""
    written = _in_script(draw, digits)
    mode = draw(st.sampled_from(["groups", "every", "plain", "brackets"]))
    pieces: list[str] = []
    i = 0
    while i < len(written):
        n = 1 if mode == "every" else len(written) if mode == "plain" else draw(st.integers(2, 5))
        pieces.append(written[i:i + n])
        i += n
    if mode == "brackets" and len(pieces) > 1:
        pieces[0] = f"({pieces[0]})"
    one_sep = draw(st.booleans())
    sep = draw(st.sampled_from(SEPARATORS))
    text = pieces[0]
    for piece in pieces[1:]:
        text += (sep if one_sep else draw(st.sampled_from(SEPARATORS))) + piece
    if draw(st.booleans()):  # a zero-width character somewhere inside
        at = draw(st.integers(1, max(1, len(text) - 1)))
        text = text[:at] + draw(st.sampled_from(ZERO_WIDTH)) + text[at:]
    return text


def _valid_mobile(digits: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(digits, "IN"))


mobile_digits = st.builds(lambda first, rest: first + rest, st.sampled_from("6789"),
                          st.text(alphabet=string.digits, min_size=9, max_size=9)).filter(_valid_mobile)
id_digits = st.builds(lambda first, rest: first + rest, st.sampled_from("23456789"),
                      st.text(alphabet=string.digits, min_size=11, max_size=11))


@st.composite
def phones(draw: st.DrawFn, digits: st.SearchStrategy[str] = mobile_digits) -> Pii:
    number = draw(digits)
    prefix = draw(st.sampled_from(["", "", "+91 ", "+91", "+91-", "+91.", "0", "0091 ", "(+91) ", "+91 ("]))
    body = draw(grouped(number))
    if prefix.endswith("("):
        body += ")"
    return Pii("phone", prefix + body, digits=number)


@st.composite
def national_ids(draw: st.DrawFn, digits: st.SearchStrategy[str] = id_digits) -> Pii:
    number = draw(digits)
    return Pii("national_id", draw(grouped(number)), digits=number)


_local = st.builds(lambda a, b, c: f"{a}{c}{b}", st.text(alphabet=string.ascii_lowercase, min_size=4, max_size=8),
                   st.text(alphabet=string.digits, min_size=2, max_size=4), st.sampled_from(["", ".", "_", "-"]))
_domain = st.builds(lambda a, t: f"{a}.{t}", st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=8),
                    st.sampled_from(["in", "org", "co.in", "gov.in", "com"]))


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) - 0x21 + 0xFF01) if "!" <= c <= "~" else c for c in text)


@st.composite
def emails(draw: st.DrawFn, local: str | None = None, domain: str | None = None) -> Pii:
    local = local or draw(_local)
    domain = domain or draw(_domain)
    form = draw(st.sampled_from(["plain", "upper", "fullwidth_at", "fullwidth_all", "spaces", "zero_width",
                                 "percent_url", "mailto", "quoted", "ip_literal", "at_word", "small_at"]))
    text = {
        "plain": f"{local}@{domain}",
        "upper": f"{local.upper()}@{domain.upper()}",
        "fullwidth_at": f"{local}＠{domain}",
        "fullwidth_all": _fullwidth(f"{local}@{domain}"),
        "spaces": f"{local}{draw(st.sampled_from([' @ ', '@ ', ' @', '  @  ']))}{domain}",
        "zero_width": f"{local}{draw(st.sampled_from(ZERO_WIDTH))}@{domain}",
        "percent_url": f"https://portal.example/contact?from={local}%40{domain}&lang=hi",
        "mailto": f"<a href=\"mailto:{local}@{domain}\">write</a>",
        "quoted": f"\"{local}\"@{domain}",
        "ip_literal": f"{local}@[10.{len(local)}.{len(domain)}.7]",
        "at_word": f"{local} (at) {domain}",
        "small_at": f"{local}﹫{domain}",
    }[form]
    if form == "ip_literal":
        domain = f"[10.{len(local)}.{len(domain)}.7]"
    return Pii("email", text, local=local, domain=domain)


any_pii = st.one_of(phones(), national_ids(), emails())


@st.composite
def in_prose(draw: st.DrawFn, pii: Pii) -> str:
    """``pii`` inside a sentence, glued to it in any way that keeps it one value."""
    left = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=4)))
    right = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=4)))
    return f"{left}{draw(st.sampled_from(GLUE))}{pii.text}{draw(st.sampled_from(GLUE))[::-1]}{right}"


# --------------------------------------------------------------------------- independent recovery check


def canonical(text: str) -> str:
    """NFKC, every Unicode digit as ASCII, format characters removed, percent-decoding, case-folded."""
    out = []
    for c in unicodedata.normalize("NFKC", text):
        if unicodedata.category(c) == "Cf":
            continue
        d = unicodedata.decimal(c, None)
        out.append(str(d) if d is not None else c)
    return unquote("".join(out)).casefold()


def recoverable(pii: Pii, text: str) -> bool:
    """Can ``pii`` be read back from ``text``? Digits: in the text's digits with everything else removed;
    e-mail: its local part and its domain both present."""
    canon = canonical(text)
    if pii.digits:
        return pii.digits in "".join(c for c in canon if c.isdigit())
    return pii.local.casefold() in canon and pii.domain.casefold() in canon
