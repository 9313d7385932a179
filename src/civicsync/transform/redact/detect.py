"""Finding personal data in normalised text: e-mail addresses, phone numbers, id shapes, known values.

A :class:`Detector` is built once per masking rule and used once per text. Its :meth:`Detector.redact`
prefilters cheaply (a text with fewer than six digit-like characters and nothing that reads as '@'
cannot hold anything it looks for, and is returned untouched without normalising it), then
normalises (:mod:`civicsync.transform.redact.normalise`), finds spans in the normalised views and
replaces them in the original text. What is found, in this order (a later step never sees what an
earlier one took):

1. e-mail addresses (:data:`EMAIL_RE`): unquoted and quoted local parts, domain names and IP literals,
   in any of the forms the normaliser undoes ('＠', '%40', '%2540', '&#64;', '&commat;', '(at)', '<at>',
   spaces around '@', a zero-width space before it), also inside URLs;
2. the person's own values (:mod:`civicsync.transform.redact.known`), when the rule declares them;
3. digit runs (digits with only separators between them, whatever the digits' script):

   - a run that libphonenumber reads as a phone number for the configured region (at the configured
     leniency) is a phone: ``[PHONE]``. The whole run is checked first against the region's metadata
     (:class:`NationalValidity`, libphonenumber's own validity rule without its parsing); otherwise
     libphonenumber's ``PhoneNumberMatcher`` looks for numbers inside the run;
   - a run with exactly one of the configured id lengths of digits is an id: ``[ID]``;
   - with ``long_numbers``, what remains of a run longer than the longest id length is ``[ID]``
     (an account or card number contains an id-length window).

Limits: numbers written in words, e-mail addresses without any form of '@' ('ramesh at gmail dot com'
with plain 'at'), and phone numbers that are not valid for their region are not found (a known value
is, if the rule declares it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers
from phonenumbers import Leniency

from civicsync.config.masking import RedactMask
from civicsync.transform.redact.known import find_known
from civicsync.transform.redact.needles import EMAIL_TOKEN, ID_TOKEN, PHONE_TOKEN, KnownNeedles, Span
from civicsync.transform.redact.normalise import Normalised, at_like_characters, digit_like_class, normalise

EMAIL_RE = re.compile(
    r"""
    (?: "[^"\r\n]{1,64}"                         # a quoted local part: "ramesh kumar"@...
      | [\w.!#$%&'*+/=?^`{|}~-]{1,64} )          # or the characters RFC 5322 allows unquoted
    @
    (?: \[ (?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}      # an IP literal: [10.0.0.1], [IPv6:...] (never a
           | IPv6:[0-9A-Fa-f:.]{2,45}) \]          #   token such as [EMAIL]: redaction stays idempotent)
      | [\w-]{1,63} (?:\.[\w-]{1,63})* )         # or a domain (a dot is not required: 'ramesh@gmail')
    """,
    re.VERBOSE,
)
"""An e-mail address in the normalised text. Of a local part longer than 64 characters only the last
64 are taken (this bounds the scan). Inside a URL ('...?from=ramesh@gmail.com&...') the local part
starts after the last '/', '?', '=' or '&' (see :func:`_email_start`), so the URL stays readable."""

_URL_PUNCTUATION = re.compile(r".*[/?=&]")
# The same address, read outwards from its '@' (a scan per '@' rather than a match attempt at every
# position of the text, which costs more than everything else the redaction does).
_LOCAL_BEFORE_AT = re.compile(r"""(?:"[^"\r\n]{1,64}"|[\w.!#$%&'*+/=?^`{|}~-]{1,64})\Z""")
_DOMAIN_AFTER_AT = re.compile(
    r"\[(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|IPv6:[0-9A-Fa-f:.]{2,45})\]|[\w-]{1,63}(?:\.[\w-]{1,63})*")


def find_emails(text: str) -> list[tuple[int, int]]:
    """The (start, end) of every address of :data:`EMAIL_RE` in ``text``, local part cut after URL
    punctuation as :func:`_email_start` says."""
    found: list[tuple[int, int]] = []
    at = text.find("@")
    last_end = 0
    while at >= 0:
        local = _LOCAL_BEFORE_AT.search(text, max(last_end, at - 66), at)
        domain = _DOMAIN_AFTER_AT.match(text, at + 1)
        if local is not None and domain is not None:
            start = local.start()
            cut = _URL_PUNCTUATION.match(text, start, at)
            if cut is not None and cut.end() < at:
                start = cut.end()
            found.append((start, domain.end()))
            last_end = domain.end()
        at = text.find("@", max(at + 1, last_end))
    return found


def _email_start(m: re.Match[str]) -> int:
    """Where an address found by :data:`EMAIL_RE` starts: after URL punctuation in its local part,
    unless nothing of the local part would remain."""
    local_end = m.group().rfind("@")
    cut = _URL_PUNCTUATION.match(m.group(), 0, local_end)
    return m.start() + cut.end() if cut is not None and cut.end() < local_end else m.start()

_RUN = re.compile(r"\+?[0-9](?: *[0-9])*")
"""A digit run in the ``digits`` view, where every separator is a space; a leading '+' kept for phones."""

_LENIENCY = {"possible": Leniency.POSSIBLE, "valid": Leniency.VALID,
             "strict_grouping": Leniency.STRICT_GROUPING, "exact_grouping": Leniency.EXACT_GROUPING}
_BLANK = "x"  # fills spans already taken: a letter, so it also breaks digit runs
MIN_CANDIDATE_DIGITS = 6
def _email_markers() -> str:
    """What can read as '@' before normalising: '@' and the characters whose normal form is '@',
    a percent-encoded '@' (also twice: '%2540'), an HTML character reference of '@' ('&#64;', '&#x40;',
    '&commat;', also as '&amp;#64;') and '(at)' or '<at>' in brackets."""
    return ("[@" + "".join(re.escape(c) for c in at_like_characters()) + r"]|%(?:25)*40|[(\[{<]\s*at\s*[)\]}>]"
            r"|&(?:amp;)*(?:#0*64|#x0*40|commat|lt;\s*at)")


_MARKER_STARTS = frozenset("([{<&%")  # the first characters of the markers other than '@'
_VALID_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                "fixed_line", "mobile")


class NationalValidity:
    """libphonenumber's validity check of a national number for one region (its ``is_valid_number_for_region``
    on the region's own metadata: the general pattern, then any number type's pattern, each with its possible
    lengths), with the patterns compiled once. The library spends most of its time elsewhere (parsing,
    building number objects); this keeps phone detection off the hot path of batch flows."""

    def __init__(self, region: str) -> None:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        self.country_code = meta.country_code if meta is not None else None
        self.general = self._desc(meta.general_desc) if meta is not None else None
        descs = [self._desc(getattr(meta, name, None)) for name in _VALID_TYPES] if meta is not None else []
        self.types = [d for d in descs if d is not None]

    @staticmethod
    def _desc(desc: object) -> tuple[frozenset[int], re.Pattern[str]] | None:
        pattern = getattr(desc, "national_number_pattern", None)
        if not pattern:
            return None
        return frozenset(getattr(desc, "possible_length", None) or ()), re.compile(pattern)

    def __call__(self, nsn: str) -> bool:
        """Is ``nsn`` (digits, no prefix) a valid number of the region?"""
        if self.general is None or not _matches(self.general, nsn):
            return False
        return any(_matches(desc, nsn) for desc in self.types)


def _matches(desc: tuple[frozenset[int], re.Pattern[str]], nsn: str) -> bool:
    lengths, pattern = desc
    return (not lengths or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


class Detector:
    """The compiled detection of one redact rule."""

    def __init__(self, spec: RedactMask) -> None:
        wanted = {p for p in spec.patterns if isinstance(p, str)}
        self.emails = "email" in wanted
        self.ids = "national_id" in wanted
        self.phones = "phone" in wanted
        self.region = spec.region
        self.leniency = _LENIENCY[spec.phone_leniency]
        self.id_lengths = frozenset(spec.national_id.lengths)
        self.longest_id = max(spec.national_id.lengths)
        self.shortest_id = min(spec.national_id.lengths)
        self.long_numbers = spec.national_id.long_numbers
        d = digit_like_class()
        self._digits_prefilter = re.compile(rf"\A(?:[^{d[1:-1]}]*{d}){{{MIN_CANDIDATE_DIGITS}}}", re.DOTALL)
        # Whole-run check before the (slower) matcher, for the leniencies a plain parse can decide.
        self._whole_run_check = {"possible": phonenumbers.is_possible_number,
                                 "valid": phonenumbers.is_valid_number}.get(spec.phone_leniency)
        # The default region's prefixes, for validating a run without parsing it (parsing is most of
        # the cost of a phone number): '+' or the international prefix with the country code, or the
        # trunk prefix, in front of the national number.
        meta = phonenumbers.PhoneMetadata.metadata_for_region(spec.region)
        self._valid_national = NationalValidity(spec.region)
        self._country_code = meta.country_code if meta is not None else None
        intl = meta.international_prefix if meta is not None else None
        self._intl_prefix = intl if intl and intl.isdigit() else None
        self._trunk_prefix = meta.national_prefix if meta is not None else None
        self._email_prefilter = re.compile(_email_markers(), re.IGNORECASE)

    def candidate(self, text: str) -> bool:
        """Could ``text`` hold anything this detector (or a known value) finds? Cheap; no false 'no'."""
        if text.isascii():  # most texts: plain membership tests and one C-level pass over the bytes
            if "@" in text or "%40" in text:
                return True
            if not _MARKER_STARTS.isdisjoint(text) and self._email_prefilter.search(text) is not None:
                return True
            return len(text) - len(text.encode("ascii").translate(None, b"0123456789")) >= MIN_CANDIDATE_DIGITS
        return self._email_prefilter.search(text) is not None or self._digits_prefilter.match(text) is not None

    def redact(self, text: str, known: KnownNeedles | None = None, *, checked: bool = False) -> str:
        """``text`` with every finding replaced by its token, in the original text (``checked``: the
        caller has already found it a :meth:`candidate`)."""
        if not checked and not known and not self.candidate(text):
            return text
        n = normalise(text)
        spans = self.find(n, known)
        return apply_spans(n, spans) if spans else text

    def find(self, n: Normalised, known: KnownNeedles | None) -> list[Span]:
        """Every finding in ``n``, as normalised spans."""
        spans: list[Span] = []
        digits = n.digits
        if self.emails and "@" in n.text:
            spans += [(a, b, EMAIL_TOKEN) for a, b in find_emails(n.text)]
            digits = _blank(digits, spans)
        if known:

            found = find_known(n.text, digits, known)
            spans += found
            digits = _blank(digits, found)
        if self.ids or self.phones:
            spans += self._numbers(digits)
        return spans

    def _numbers(self, digits: str) -> list[Span]:
        spans: list[Span] = []
        for m in _RUN.finditer(digits):
            run = m.group()
            count = len(run) - run.count(" ") - (run[0] == "+")  # a run is digits, spaces and a leading '+'
            if count < 7 and count < self.shortest_id:
                continue
            spans += self._run_spans(run, m.start(), count)
        return spans

    def _run_spans(self, run: str, offset: int, count: int) -> list[Span]:
        plus = run.startswith("+")
        if self.ids and count in self.id_lengths and not plus:
            return [(offset, offset + len(run), ID_TOKEN)]
        phones: list[Span] = []
        if self.phones and count >= 7:
            if self._whole_run_is_phone(run):
                return [(offset, offset + len(run), PHONE_TOKEN)]
            for match in phonenumbers.PhoneNumberMatcher(run, self.region, leniency=self.leniency):
                phones.append((offset + match.start, offset + match.end, PHONE_TOKEN))
        if not self.ids:
            return phones
        rest = _blank(run, [(a - offset, b - offset, t) for a, b, t in phones])
        left = sum(c.isdigit() for c in rest)
        if (left in self.id_lengths) or (self.long_numbers and left > self.longest_id) or \
                (not phones and count in self.id_lengths):
            return [*phones, *_digit_segments(rest, offset)]
        return phones


    def _national_number(self, run: str) -> str | None:
        """The run's national number for the default region, when its prefix says so plainly."""
        cc = str(self._country_code)
        digits = run.replace(" ", "").lstrip("+")
        if run.startswith("+"):
            nsn = digits[len(cc):] if digits.startswith(cc) else None
        elif self._intl_prefix and digits.startswith(self._intl_prefix + cc):
            nsn = digits[len(self._intl_prefix) + len(cc):]
        elif self._trunk_prefix and digits.startswith(self._trunk_prefix):
            nsn = digits[len(self._trunk_prefix):]
        else:
            nsn = digits
        return nsn if nsn and nsn[0] != "0" and nsn.isdigit() else None

    def _whole_run_is_phone(self, run: str) -> bool:
        if self._whole_run_check is None or len(run) > 40:
            return False
        if self._whole_run_check is phonenumbers.is_valid_number and self._country_code is not None:
            nsn = self._national_number(run)
            if nsn is not None and self._valid_national(nsn):
                return True  # the same metadata and check as parse + is_valid, without the parsing
        try:
            return bool(self._whole_run_check(phonenumbers.parse(run, self.region)))
        except phonenumbers.NumberParseException:
            return False


def _digit_segments(rest: str, offset: int) -> list[Span]:
    """The stretch from the first to the last digit left in a run, as one [ID] span."""
    first = next(i for i, c in enumerate(rest) if c.isdigit())
    last = max(i for i, c in enumerate(rest) if c.isdigit())
    return [(offset + first, offset + last + 1, ID_TOKEN)]


def _blank(text: str, spans: Sequence[Span]) -> str:
    """``text`` with ``spans`` overwritten by a letter (same length, so offsets hold)."""
    if not spans:
        return text
    chars = list(text)
    for a, b, _ in spans:
        chars[a:b] = _BLANK * (b - a)
    return "".join(chars)


def apply_spans(n: Normalised, spans: Sequence[Span]) -> str:
    """The original text with each span (mapped back to the original) replaced by its token;
    overlapping spans merge and keep the first token."""
    mapped = sorted((*n.span(a, b), t) for a, b, t in spans if b > a)
    merged: list[tuple[int, int, str]] = []
    for a, b, t in mapped:
        if merged and a < merged[-1][1]:
            prev = merged[-1]
            merged[-1] = (prev[0], max(prev[1], b), prev[2])
        else:
            merged.append((a, b, t))
    out: list[str] = []
    last = 0
    for a, b, t in merged:
        out.append(n.original[last:a])
        out.append(t)
        last = b
    out.append(n.original[last:])
    return "".join(out)
