"""Protected values in matchable form, and the search of one text for them by set lookups.

A value is taken apart into what would identify it in any writing: its digit groups (digits with
only non-letters between them, in any script, at least :data:`MIN_DIGITS` long), its e-mail
addresses (local part and domain, lower case) and its mixed letter-and-digit tokens ('OFF-4242',
a storage URI). A text is searched by normalising it the same way and looking every digit window
of a protected length, every address and every token up in hash sets: the cost grows with the
text, not with the number of protected values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from civicsync.transform.redact.normalise import normalise

MIN_DIGITS = 8
MIN_TOKEN = 6
_GROUP = re.compile(r"[0-9](?:[\W_]*[0-9])*")
_EMAIL = re.compile(r"([\w.!#$%&'*+/=?^`{|}~-]{1,64})@([\w-]{1,63}(?:\.[\w-]{1,63})*)")
_WORD = re.compile(r"[\w.+-]{3,64}")
_TOKEN_STRIP = "\"'()[]{}<>,;:.!?"


def _digit_groups(digits_view: str) -> list[str]:
    return ["".join(c for c in g.group() if c.isdigit()) for g in _GROUP.finditer(digits_view)]


def _tokens(text: str) -> list[str]:
    out = []
    for raw in text.split():
        token = raw.strip(_TOKEN_STRIP).lower()
        if len(token) >= MIN_TOKEN and any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
            out.append(token)
    return out


@dataclass
class Needles:
    """One protected set, ready for searching."""

    digits: set[str] = field(default_factory=set)
    emails: set[tuple[str, str]] = field(default_factory=set)
    locals_: dict[str, set[str]] = field(default_factory=dict)  # local part → its domains
    tokens: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.digits) + len(self.emails) + len(self.tokens)

    def add_value(self, value: str, *, whole: bool = True) -> None:
        """Take a protected value apart. ``whole``: the value itself is protected (a phone column),
        not only what is inside it (a comment)."""
        n = normalise(value)
        for group in _digit_groups(n.digits):
            if len(group) >= MIN_DIGITS:
                self.digits.add(group)
        for m in _EMAIL.finditer(n.text):
            self._add_email(m.group(1), m.group(2))
        if whole:
            self.tokens.update(_tokens(n.text))

    def add_values(self, values: Iterable[str | None], *, whole: bool = True) -> None:
        """Take each non-NULL value apart (see :meth:`add_value`)."""
        for v in values:
            if v:
                self.add_value(v, whole=whole)

    def _add_email(self, local: str, domain: str) -> None:
        local, domain = local.strip('"').lower(), domain.lower()
        self.emails.add((local, domain))
        self.locals_.setdefault(local, set()).add(domain)

    def hits(self, text: str) -> int:
        """How many protected values (digit windows, addresses, tokens) ``text`` holds raw."""
        n = normalise(text)
        found = 0
        if self.digits:
            lengths = {len(d) for d in self.digits}
            for group in _digit_groups(n.digits):
                found += sum(1 for size in lengths if size <= len(group)
                             for i in range(len(group) - size + 1) if group[i:i + size] in self.digits)
        if self.locals_:
            lower = n.text.lower()
            for word in _WORD.findall(lower):
                domains = self.locals_.get(word.strip("."))
                if domains and any(d in lower for d in domains):
                    found += 1
        if self.tokens:
            found += sum(1 for t in _tokens(n.text) if t in self.tokens)
        return found
