"""What the detector finds and hands on: spans, their tokens, and one person's known values in
matchable form (shared by :mod:`~civicsync.transform.redact.detect` and :mod:`~civicsync.transform.redact.known`)."""

from __future__ import annotations

from dataclasses import dataclass

from civicsync.transform.redact.normalise import normalise

Span = tuple[int, int, str]
"""(start, end, token) in the normalised text."""

EMAIL_TOKEN, ID_TOKEN, PHONE_TOKEN = "[EMAIL]", "[ID]", "[PHONE]"

_NON_DIGIT_BYTES = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)


@dataclass(frozen=True)
class KnownNeedles:
    """One person's protected values, in matchable form."""

    digits: tuple[tuple[str, str], ...] = ()    # (digit string, token)
    emails: tuple[tuple[str, str], ...] = ()    # (local part, domain), lower case

    def __bool__(self) -> bool:
        return bool(self.digits or self.emails)

    def mentioned_in(self, text: str) -> bool:
        """Could ``text`` mention an e-mail's local part on its own? (A cheap check for texts the
        detector's prefilter lets pass: they hold no '@' and few digits.)"""
        if not self.emails:
            return False
        lowered = (text if text.isascii() else normalise(text).text).lower()
        return any(local in lowered for local, _ in self.emails)

    def may_be_in(self, text: str) -> bool:
        """Could ``text`` hold one of these values? Exact for ASCII text (its digits, all separators
        removed, and its lower case are searched); always True for other text, which is normalised first."""
        if not text.isascii():
            return True
        if self.digits:
            digits = text.encode("ascii").translate(None, _NON_DIGIT_BYTES).decode("ascii")
            if any(d in digits for d, _ in self.digits):
                return True
        return self.mentioned_in(text)
